//! Guest memory under change, on /dev/rvmx or (first argument) /dev/kvm:
//! dirty logging, a slot replaced while a vCPU runs, EPT flushes that spare
//! CPUs not running the VM, and the FPU/XSAVE
//! state across VM exits and host-CPU migration. Prints TAP.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const DIRTY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dirty.bin"));
const READER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reader.bin"));
const SSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sse.bin"));
const CODE: u64 = 0x1000;
/// The logged slot: 64 pages at 512 KiB.
const LOG_GPA: u64 = 0x80000;
const LOG_PAGES: u64 = 64;

fn anon(size: usize, fill: u8) -> u64 {
    // SAFETY: a fresh anonymous mapping, never unmapped.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert!(p != libc::MAP_FAILED);
    // SAFETY: within the new mapping.
    unsafe { std::ptr::write_bytes(p as *mut u8, fill, size) };
    p as u64
}

fn region(slot: u32, gpa: u64, size: u64, uaddr: u64, flags: u32) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: uaddr }
}

/// The page numbers set in a dirty bitmap.
fn pages(bitmap: &[u64]) -> Vec<u64> {
    (0..bitmap.len() as u64 * 64).filter(|&p| bitmap[(p / 64) as usize] & (1 << (p % 64)) != 0).collect()
}

/// Lets the dirty guest write one byte in each of `list` (pages of the
/// logged slot) and come back.
fn dirty_round(vm: &TestVm, vcpu: &mut kvm_ioctls::VcpuFd, list: &[u64]) -> String {
    let mut bytes = Vec::new();
    for p in list {
        // Segment (LOG_GPA + p * 4096) / 16.
        bytes.extend_from_slice(&(((LOG_GPA + p * 4096) >> 4) as u16).to_le_bytes());
    }
    bytes.extend_from_slice(&[0, 0]);
    vm.write(0x700, &bytes);
    match vcpu.run() {
        Ok(VcpuExit::IoOut(0x10, _)) => "out".into(),
        other => format!("{other:?}"),
    }
}

/// CPU `cpu`'s count of function-call IPIs ("CAL" in /proc/interrupts).
fn function_call_ipis(cpu: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("CAL:"))?;
    line.split_whitespace().nth(1 + cpu)?.parse().ok()
}

fn set_affinity(tid: i32, cpu: usize) {
    // SAFETY: a cpu_set_t built with the libc macros, for our own thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let is_kvm = path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(18);

    // --- Dirty logging: exactly the pages written since the last call.
    let vm = TestVm::new(&kvm, LOG_GPA as usize);
    vm.write(CODE, DIRTY);
    let logged = anon((LOG_PAGES * 4096) as usize, 0);
    // SAFETY: the mapping lives as long as the process.
    unsafe { vm.vm.set_user_memory_region(region(1, LOG_GPA, LOG_PAGES * 4096, logged, KVM_MEM_LOG_DIRTY_PAGES)).unwrap() };
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    let get = |slot| vm.vm.get_dirty_log(slot, (LOG_PAGES * 4096) as usize).map(|b| pages(&b)).map_err(|e| e.errno());
    let r1 = dirty_round(&vm, &mut vcpu, &[1, 5, 7, 63]);
    t.expect_eq((r1.as_str(), get(1)), ("out", Ok(vec![1, 5, 7, 63])), "round 1: the dirty log names exactly the pages written");
    let r2 = dirty_round(&vm, &mut vcpu, &[5, 9]);
    t.expect_eq((r2.as_str(), get(1)), ("out", Ok(vec![5, 9])), "round 2: pages written again are reported again, the others not");
    let r3 = dirty_round(&vm, &mut vcpu, &[]);
    t.expect_eq((r3.as_str(), get(1)), ("out", Ok(vec![])), "round 3: nothing written, nothing reported");
    // SAFETY: `logged` backs the slot.
    let bytes = unsafe { std::slice::from_raw_parts(logged as *const u8, (LOG_PAGES * 4096) as usize) };
    t.expect_eq((bytes[5 * 4096], bytes[9 * 4096], bytes[4096]), (2, 1, 1), "the guest's writes are in the launcher's memory");
    t.expect_eq(get(0).map(|_| ()), Err(libc::ENOENT), "KVM_GET_DIRTY_LOG of a slot without logging: ENOENT");
    t.expect_eq(get(40000).map(|_| ()), Err(libc::EINVAL), "KVM_GET_DIRTY_LOG of slot 40000: EINVAL");
    // Logging turned off, then on again on the same slot: writes made while
    // it was off are not reported.
    // SAFETY: as above.
    unsafe { vm.vm.set_user_memory_region(region(1, LOG_GPA, LOG_PAGES * 4096, logged, 0)).unwrap() };
    let r4 = dirty_round(&vm, &mut vcpu, &[2, 3]);
    let off = get(1).map(|_| ());
    // SAFETY: as above.
    unsafe { vm.vm.set_user_memory_region(region(1, LOG_GPA, LOG_PAGES * 4096, logged, KVM_MEM_LOG_DIRTY_PAGES)).unwrap() };
    let r5 = dirty_round(&vm, &mut vcpu, &[3, 4]);
    t.expect_eq((r4.as_str(), off, r5.as_str(), get(1)), ("out", Err(libc::ENOENT), "out", Ok(vec![3, 4])),
                "logging off, then on again: only writes since it was turned on");
    // A large logged slot (64 GiB of address space, never touched): its
    // 2 MiB bitmap is allocated, and reports nothing.
    const BIG: u64 = 64 << 30;
    // SAFETY: the range is never accessed (no vCPU runs there).
    let big = unsafe { vm.vm.set_user_memory_region(region(3, 1 << 32, BIG, 0x1000_0000_0000, KVM_MEM_LOG_DIRTY_PAGES)) };
    let log = vm.vm.get_dirty_log(3, BIG as usize).map(|b| b.iter().map(|w| w.count_ones()).sum::<u32>()).map_err(|e| e.errno());
    t.expect_eq((big.map_err(|e| e.errno()), log), (Ok(()), Ok(0)), "a 64 GiB logged slot: accepted, nothing dirty");
    // SAFETY: refused, never mapped.
    let beyond = unsafe { vm.vm.set_user_memory_region(region(4, 1 << 52, 4096, logged, 0)) };
    t.expect_eq(beyond.map_err(|e| e.errno()), Err(libc::EINVAL), "a slot beyond the physical-address width: EINVAL");
    drop(vcpu);

    // --- A slot replaced while a vCPU runs: once KVM_SET_USER_MEMORY_REGION
    // has returned, the guest never sees the old memory again.
    let vm = TestVm::new(&kvm, 0x80000);
    vm.write(CODE, READER);
    let old = anon(4096, 0);
    let new = anon(4096, 0);
    // SAFETY: the mappings are ours.
    unsafe {
        (old as *mut u32).write(1);
        (new as *mut u32).write(2);
        vm.vm.set_user_memory_region(region(2, 0x90000, 4096, old, 0)).unwrap();
    }
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    let changed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let (stale, seen_old, seen_new, runs) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let (mut stale, mut seen_old, mut seen_new, mut runs) = (0, 0, 0, 0);
            while !stop.load(Ordering::SeqCst) {
                let after_change = changed.load(Ordering::SeqCst);
                runs += 1;
                match vcpu.run() {
                    Ok(VcpuExit::IoOut(_, d)) => match d[0] {
                        1 if after_change => stale += 1,
                        1 => seen_old += 1,
                        2 => seen_new += 1,
                        _ => {}
                    },
                    Ok(VcpuExit::MmioRead(_, d)) => d.fill(0), // between delete and re-create
                    _ => {}
                }
            }
            (stale, seen_old, seen_new, runs)
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: both mappings outlive the VM.
        unsafe {
            vm.vm.set_user_memory_region(region(2, 0x90000, 0, 0, 0)).unwrap();
            vm.vm.set_user_memory_region(region(2, 0x90000, 4096, new, 0)).unwrap();
        }
        changed.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    t.check(seen_old > 0 && seen_new > 0 && stale == 0, "slot replaced while the vCPU runs: no stale read after the ioctl returned",
            format!("old {seen_old}, new {seen_new}, stale {stale}, runs {runs}"));

    // --- EPT flushes interrupt only the CPUs running the VM's vCPUs (as
    // KVM's kvm_flush_remote_tlbs), never every CPU: with this thread on
    // CPU 0 and no vCPU running, turning dirty logging on (which takes
    // write access from the mapped pages and must flush) sends CPU 1 no
    // function-call IPIs. rvmx used to run INVEPT on every CPU, and wait
    // for each, under the VM's memory spinlock: one IPI per flush.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        t.skip("EPT flushes with no vCPU running send no IPI to other CPUs", "one CPU");
    } else {
        const TOGGLES: u64 = 300;
        set_affinity(0, 0);
        let vm = TestVm::new(&kvm, LOG_GPA as usize);
        vm.write(CODE, DIRTY);
        let mem = anon((LOG_PAGES * 4096) as usize, 0);
        let set = |flags| {
            // SAFETY: `mem` lives as long as the process.
            unsafe { vm.vm.set_user_memory_region(region(1, LOG_GPA, LOG_PAGES * 4096, mem, flags)) }.map_err(|e| e.errno())
        };
        set(0).unwrap();
        let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
        let mapped = dirty_round(&vm, &mut vcpu, &[1, 2, 3]);
        // CPU 1 busy in user mode meanwhile: an idle CPU may take a
        // function call without an interrupt (it polls), and then an IPI
        // would not show in its count.
        let spin = AtomicBool::new(true);
        let (errors, ipis) = std::thread::scope(|sc| {
            sc.spawn(|| {
                set_affinity(0, 1);
                while spin.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            let before = function_call_ipis(1);
            let mut errors = 0;
            for _ in 0..TOGGLES {
                errors += u32::from(set(KVM_MEM_LOG_DIRTY_PAGES).is_err()) + u32::from(set(0).is_err());
            }
            let ipis = function_call_ipis(1).zip(before).map(|(a, b)| a.saturating_sub(b));
            spin.store(false, Ordering::Relaxed);
            (errors, ipis)
        });
        t.check(mapped == "out" && errors == 0 && ipis.is_some_and(|n| n < TOGGLES / 4),
                "EPT flushes with no vCPU running send no IPI to other CPUs",
                format!("{mapped}, {errors} errors, {ipis:?} function-call IPIs to CPU 1 in {TOGGLES} flushes"));
        println!("# {ipis:?} function-call IPIs to CPU 1 during {TOGGLES} dirty-logging flushes");
        // SAFETY: a cpu_set_t with every CPU, for this thread.
        unsafe {
            let mut all: libc::cpu_set_t = std::mem::zeroed();
            (0..cpus).for_each(|c| libc::CPU_SET(c, &mut all));
            libc::sched_setaffinity(0, std::mem::size_of_val(&all), &all);
        }
    }

    // --- FPU state: KVM_SET_FPU's XMM values survive VM exits and moves
    // between host CPUs (while this process uses its own XMM registers).
    let vm = TestVm::new(&kvm, 0x80000);
    vm.write(CODE, SSE);
    let vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    let mut s = vcpu.get_sregs().unwrap();
    s.cr4 |= 1 << 9; // OSFXSR: SSE instructions allowed
    s.cr0 = (s.cr0 & !(1 << 2)) | (1 << 1); // EM off, MP on
    vcpu.set_sregs(&s).unwrap();
    let mut fpu = vcpu.get_fpu().unwrap();
    for (i, x) in fpu.xmm.iter_mut().enumerate().take(8) {
        for (j, b) in x.iter_mut().enumerate() {
            *b = (i * 16 + j) as u8 ^ 0x5a;
        }
    }
    let want: Vec<u8> = fpu.xmm[..8].iter().flatten().copied().collect();
    if is_kvm {
        t.skip("KVM_GET_FPU: MXCSR at its reset value", "KVM reports 0 before the first KVM_RUN");
    } else {
        t.expect_eq(fpu.mxcsr, 0x1f80, "KVM_GET_FPU: MXCSR at its reset value");
    }
    vcpu.set_fpu(&fpu).unwrap();
    let back = vcpu.get_fpu().map(|f| f.xmm[..8].iter().flatten().copied().collect::<Vec<u8>>()).unwrap_or_default();
    t.expect_eq(back == want, true, "KVM_SET_FPU then KVM_GET_FPU: the same XMM registers");
    // The guest gets the values through KVM_SET_XSAVE: XMM0-7 in the legacy
    // region (bytes 160..288), SSE marked present in XSTATE_BV (byte 512).
    // (KVM's KVM_SET_FPU leaves XSTATE_BV alone, so on KVM the guest would
    // see initial XMM registers; rvmx's sets it.)
    let mut x = vcpu.get_xsave().unwrap();
    for (i, b) in want.iter().enumerate() {
        let (w, sh) = ((160 + i) / 4, ((160 + i) % 4) * 8);
        x.region[w] = (x.region[w] & !(0xff << sh)) | (u32::from(*b) << sh);
    }
    x.region[128] |= 2;
    // SAFETY: a 4 KiB kvm_xsave (no dynamic features are enabled).
    unsafe { vcpu.set_xsave(&x).unwrap() };
    let mut r = vcpu.get_regs().unwrap();
    r.rcx = 20_000;
    vcpu.set_regs(&r).unwrap();
    let tid = AtomicI32::new(0);
    let done = AtomicBool::new(false);
    let mut vcpu = vcpu;
    let (end, moves) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            let end = loop {
                match vcpu.run() {
                    Ok(VcpuExit::IoOut(..)) => {}
                    Ok(VcpuExit::Hlt) => break "hlt".to_string(),
                    other => break format!("{other:?}"),
                }
            };
            done.store(true, Ordering::SeqCst);
            end
        });
        let mut moves = 0;
        while !done.load(Ordering::SeqCst) {
            let id = tid.load(Ordering::SeqCst);
            if id != 0 {
                set_affinity(id, moves % 2);
                moves += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        (h.join().unwrap(), moves)
    });
    let mut stored = vec![0u8; 128];
    for (i, b) in stored.iter_mut().enumerate() {
        *b = (vm.read_u32(0x800 + i as u64) & 0xff) as u8;
    }
    t.check(end == "hlt" && stored == want, "XMM0-7 survive 20,000 exits and host-CPU moves",
            format!("{end}: stored {:02x?}", &stored[..16]));
    println!("# FPU test: {moves} affinity changes");

    // --- KVM_GET/SET_XSAVE and KVM_GET/SET_XCRS.
    let x = vcpu.get_xsave();
    t.check(x.as_ref().is_ok_and(|x| x.region[6] == 0x1f80), "KVM_GET_XSAVE: MXCSR in the legacy area", "");
    if let Ok(mut x) = x {
        // SAFETY: a 4 KiB kvm_xsave (no dynamic features are enabled).
        t.check(unsafe { vcpu.set_xsave(&x) }.is_ok(), "KVM_SET_XSAVE of what KVM_GET_XSAVE returned", "");
        x.region[130] = 1; // XCOMP_BV bit 0: a compacted image
        // SAFETY: as above.
        t.expect_eq(unsafe { vcpu.set_xsave(&x) }.map_err(|e| e.errno()), Err(libc::EINVAL), "KVM_SET_XSAVE of a compacted image: EINVAL");
    } else {
        t.check(false, "KVM_SET_XSAVE of what KVM_GET_XSAVE returned", "no xsave");
        t.check(false, "KVM_SET_XSAVE of a compacted image: EINVAL", "no xsave");
    }
    let mut xcrs = vcpu.get_xcrs().unwrap_or_default();
    let x87 = xcrs.nr_xcrs >= 1 && xcrs.xcrs[0].xcr == 0 && xcrs.xcrs[0].value & 1 == 1;
    xcrs.nr_xcrs = 1;
    xcrs.xcrs[0].value = 2; // SSE without x87: invalid
    t.expect_eq((x87, vcpu.set_xcrs(&xcrs).map_err(|e| e.errno())), (true, Err(libc::EINVAL)), "KVM_GET_XCRS has XCR0; KVM_SET_XCRS refuses XCR0 without x87");
    t.finish();
}
