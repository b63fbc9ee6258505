//! The vCPU stays loaded on its CPU between exits (vmcs/mod.rs,
//! kglue/vmcs.c), on /dev/rvmx or /dev/kvm (the first argument): its VMCS
//! stays active on the host CPU it last ran on, and must follow the thread
//! when it moves, and be cleared when that CPU goes offline or suspends.
//! One vCPU runs guests/loaded.asm, which checks at every round that its
//! TSC never goes back and that ESI, EDI, EBP (set by the VMM) and XMM0-7
//! (loaded by the guest) keep their values; each round is an exit to
//! userspace. Prints TAP.
//!
//! 1. Migration: another thread moves the vCPU thread between the two host
//!    CPUs (sched_setaffinity) until the vCPU thread has seen itself on a
//!    new CPU 1,000 times after an exit; the vCPU thread clobbers its own
//!    XMM0 before every KVM_RUN.
//! 2. CPU hotplug: the VMCS is active on CPU 1 (the vCPU ran there last)
//!    when CPU 1 goes offline; the vCPU runs on CPU 0, then on CPU 1 again.
//! 3. Suspend to RAM (/sys/power/pm_test = core) with the VMCS active on
//!    a CPU; the vCPU runs on after resume.
//! 4. After all that, KVM_GET_REGS and KVM_GET_FPU read the same values.

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loaded.bin"));
const CODE: u64 = 0x1000;
const XMM_COPY: u64 = 0x800;
const MIGRATIONS: u32 = 1000;
/// At most this many rounds for the migrations (a bound, not a timing).
const MAX_ROUNDS: u32 = 200_000;

fn xmm_pattern(i: usize) -> [u8; 16] {
    core::array::from_fn(|b| (i * 16 + b) as u8 ^ 0xa5)
}

fn setup(kvm: &Kvm) -> (TestVm, VcpuFd) {
    let vm = TestVm::new(kvm, 1 << 20);
    vm.write(CODE, GUEST);
    let vcpu = vm.real_mode_vcpu(kvm, 0, CODE);
    let mut s = vcpu.get_sregs().unwrap();
    s.cr4 |= 1 << 9; // OSFXSR: SSE instructions allowed
    vcpu.set_sregs(&s).unwrap();
    let mut r = vcpu.get_regs().unwrap();
    (r.rsi, r.rdi, r.rbp) = (0x1234_5678, 0x9abc_def0, 0x0f1e_2d3c);
    vcpu.set_regs(&r).unwrap();
    // The guest loads XMM0-7 from here.
    for i in 0..8 {
        vm.write(XMM_COPY + 16 * i as u64, &xmm_pattern(i));
    }
    (vm, vcpu)
}

/// The host CPU this thread runs on.
fn this_cpu() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }
}

/// Pins thread `tid` (0: this one) to host CPU `cpu`.
fn pin(tid: i32, cpu: usize) -> bool {
    // SAFETY: a cpu_set_t built with the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) == 0
    }
}

/// One round of the guest: KVM_RUN until its OUT to port 0x10 (answering
/// its IN from port 0x11 with `stop`). Err: what went wrong instead.
fn round(vcpu: &mut VcpuFd, stop: bool) -> Result<(), String> {
    loop {
        // The VMM's own XMM0 changes before every KVM_RUN: the guest's
        // must not see it.
        // SAFETY: writes XMM0 only, declared clobbered.
        unsafe { core::arch::asm!("pcmpeqb xmm0, xmm0", out("xmm0") _) };
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, _)) => return Ok(()),
            Ok(VcpuExit::IoIn(0x11, data)) => data[0] = u8::from(stop),
            Ok(VcpuExit::IoOut(0x12, data)) => {
                return Err(format!("the guest's check {} failed (1: TSC went back, 2: registers, 3: XMM)", data[0]))
            }
            Ok(VcpuExit::Hlt) if stop => return Ok(()),
            Err(e) if e.errno() == libc::EINTR => {}
            Ok(other) => return Err(format!("unexpected exit {other:?}")),
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    }
}

fn rounds(vcpu: &mut VcpuFd, n: u32) -> Result<(), String> {
    (0..n).try_for_each(|_| round(vcpu, false))
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(5);
    let (_vm, mut vcpu) = setup(&kvm);

    // 1. Migrations while exiting to userspace.
    let start = std::time::Instant::now();
    let tid = AtomicI32::new(0);
    let cpu_now = AtomicI32::new(-1);
    let done = AtomicBool::new(false);
    let mut setaffinity = 0u32;
    let (moves, rounds_run, result) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            let (mut moves, mut n, mut last) = (0u32, 0u32, this_cpu());
            let mut result = Ok(());
            while moves < MIGRATIONS && n < MAX_ROUNDS {
                if let Err(e) = round(&mut vcpu, false) {
                    result = Err(e);
                    break;
                }
                n += 1;
                let cpu = this_cpu();
                if cpu != last {
                    moves += 1;
                    last = cpu;
                }
                cpu_now.store(cpu, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
            (moves, n, result)
        });
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let mut target = 0usize;
        while !done.load(Ordering::SeqCst) {
            target ^= 1;
            pin(tid.load(Ordering::SeqCst), target);
            setaffinity += 1;
            // Until the vCPU thread has run on the new CPU (or finished).
            while !done.load(Ordering::SeqCst) && cpu_now.load(Ordering::SeqCst) != target as i32 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        runner.join().unwrap()
    });
    t.check(
        result.is_ok() && moves >= MIGRATIONS,
        &format!("{MIGRATIONS} moves between host CPUs while exiting to userspace: TSC, registers, XMM kept"),
        format!("{moves} moves in {rounds_run} rounds; {result:?}"),
    );
    println!("# migrations: {moves} moves, {rounds_run} exits to userspace, {setaffinity} sched_setaffinity calls, {:.2} s",
             start.elapsed().as_secs_f64());
    let vcpu = &mut vcpu;

    // 2. CPU 1 goes offline while the VMCS is active there.
    let online = "/sys/devices/system/cpu/cpu1/online";
    if std::fs::metadata(online).is_ok_and(|m| !m.permissions().readonly()) {
        let r = (|| -> Result<(), String> {
            if !pin(0, 1) {
                return Err("cannot run on CPU 1".into());
            }
            rounds(vcpu, 10)?;
            // Away from CPU 1 without touching the vCPU: its VMCS stays
            // active there until CPU 1 clears it on the way down.
            pin(0, 0);
            std::fs::write(online, "0").map_err(|e| format!("offline CPU 1: {e}"))?;
            let r = rounds(vcpu, 10).map_err(|e| format!("on CPU 0 after CPU 1 went offline: {e}"));
            std::fs::write(online, "1").map_err(|e| format!("online CPU 1: {e}"))?;
            r?;
            if !pin(0, 1) {
                return Err("cannot run on CPU 1 again".into());
            }
            rounds(vcpu, 10).map_err(|e| format!("on CPU 1 after it came back: {e}"))
        })();
        t.check(r.is_ok(), "CPU 1 offline with the vCPU's VMCS active on it; the vCPU runs on CPU 0, then on CPU 1 again", format!("{r:?}"));
    } else {
        t.skip("CPU 1 offline with the vCPU's VMCS active on it", "no writable /sys/devices/system/cpu/cpu1/online");
    }

    // 3. Suspend with the VMCS active on a CPU (pm_test=core: the whole
    // suspend path down to the syscore callbacks, and back).
    let pm_test = "/sys/power/pm_test";
    let mem_ok = std::fs::read_to_string("/sys/power/state").is_ok_and(|s| s.split_whitespace().any(|w| w == "mem"));
    if std::fs::metadata(pm_test).is_ok() && mem_ok {
        let r = (|| -> Result<(), String> {
            rounds(vcpu, 10)?;
            std::fs::write(pm_test, "core").map_err(|e| format!("pm_test: {e}"))?;
            let s = std::fs::write("/sys/power/state", "mem").map_err(|e| format!("suspend: {e}"));
            let _ = std::fs::write(pm_test, "none");
            s?;
            rounds(vcpu, 10).map_err(|e| format!("after resume: {e}"))
        })();
        t.check(r.is_ok(), "suspend to RAM (pm_test=core) with the VMCS active: the vCPU runs on after resume", format!("{r:?}"));
    } else {
        t.skip("suspend to RAM with the VMCS active", "no /sys/power/pm_test or no 'mem' state");
    }
    // Let the thread run anywhere again.
    // SAFETY: a full cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (0..libc::CPU_SETSIZE as usize).for_each(|c| libc::CPU_SET(c, &mut set));
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }

    // 4. The state the VMM set, read back after the guest halts.
    let r = round(vcpu, true);
    t.check(matches!(r, Ok(())), "the guest halts when told to, every check passed", format!("{r:?}"));
    let regs = vcpu.get_regs().unwrap();
    let fpu = vcpu.get_fpu().unwrap();
    let xmm_ok = (0..8).all(|i| fpu.xmm[i] == xmm_pattern(i));
    t.check(
        (regs.rsi, regs.rdi, regs.rbp) == (0x1234_5678, 0x9abc_def0, 0x0f1e_2d3c) && xmm_ok,
        "KVM_GET_REGS and KVM_GET_FPU read the values the guest kept",
        format!("rsi {:#x} rdi {:#x} rbp {:#x}, xmm {}", regs.rsi, regs.rdi, regs.rbp, if xmm_ok { "kept" } else { "changed" }),
    );
    t.finish();
}
