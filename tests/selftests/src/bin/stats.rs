//! KVM_GET_STATS_FD: the binary statistics of a vCPU and a VM, read by a
//! small reader of KVM's documented format (api.rst "KVM_GET_STATS_FD";
//! written here from the documentation, not from rvmx's code), after a
//! guest that makes a known number of each exit. On /dev/rvmx and, given
//! as the first argument, /dev/kvm: the counters both have must agree with
//! the guest; rvmx's per-reason counters too. And a read of the VM's
//! statistics costs no more with 64 MiB of guest memory mapped than with
//! 64 KiB (running counters, as KVM's). Prints TAP.

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{ioctl, Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;

/// KVM_CAP_BINARY_STATS_FD.
const CAP_BINARY_STATS_FD: u32 = 203;

const CPUIDS: u32 = 7;
const OUTS: u32 = 5;
const MMIO_READS: u32 = 3;

/// guests/touch.asm: 32-bit protected mode at 0x1000, writes one byte every
/// EDX bytes, EBP times, from ESI, then OUT to port 0x10.
const TOUCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/touch.bin"));

/// A VM with `size` bytes of RAM at 0 whose vCPU ran guests/touch.asm over
/// every page (one byte at offset 0x800 of each), so that each page is
/// mapped; with the VM's statistics fd. The mapping lives as long as the
/// process.
fn touched_vm(kvm: &Kvm, size: u64) -> Result<(kvm_ioctls::VmFd, kvm_ioctls::VcpuFd, i32), String> {
    let vm = kvm.create_vm().map_err(|e| e.to_string())?;
    // SAFETY: a fresh anonymous mapping, never unmapped.
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), size as usize, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    };
    if mem == libc::MAP_FAILED {
        return Err("mmap".into());
    }
    // SAFETY: within the mapping.
    unsafe { std::ptr::copy_nonoverlapping(TOUCH.as_ptr(), (mem as *mut u8).add(0x1000), TOUCH.len()) };
    let region = kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: size, userspace_addr: mem as u64 };
    // SAFETY: the mapping outlives the VM.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| e.to_string())?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
    let mut s = vcpu.get_sregs().map_err(|e| e.to_string())?;
    let seg = |selector, type_| kvm_segment {
        base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0, padding: 0,
    };
    s.cs = seg(8, 11);
    s.ds = seg(16, 3);
    s.es = s.ds;
    s.ss = s.ds;
    s.cr0 |= 1;
    vcpu.set_sregs(&s).map_err(|e| e.to_string())?;
    let r = kvm_bindings::kvm_regs { rip: 0x1000, rflags: 2, rsi: 0x800, rbp: size / 4096, rdx: 4096, ..Default::default() };
    vcpu.set_regs(&r).map_err(|e| e.to_string())?;
    match vcpu.run() {
        Ok(VcpuExit::IoOut(0x10, _)) => {}
        other => return Err(format!("{other:?}")),
    }
    let fd = stats_fd(vm.as_raw_fd())?;
    Ok((vm, vcpu, fd))
}

/// The mean time of `n` reads of a whole statistics file, in µs.
fn read_cost(fd: i32, n: u32) -> f64 {
    let mut buf = vec![0u8; 16384];
    let t = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: reads into our buffer, of its size.
        unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Real mode at 0x1000: CPUID x7, OUT to port 0x80 x5, MMIO reads from
/// 0xd000:0 x3 (segment base 0xd0000, no memory there), HLT.
fn guest() -> Vec<u8> {
    let mut g = Vec::new();
    for _ in 0..CPUIDS {
        g.extend([0x0f, 0xa2]); // cpuid
    }
    for _ in 0..OUTS {
        g.extend([0xe6, 0x80]); // out 0x80, al
    }
    g.extend([0xb8, 0x00, 0xd0, 0x8e, 0xd8]); // mov ax, 0xd000; mov ds, ax
    for _ in 0..MMIO_READS {
        g.extend([0xa1, 0x00, 0x00]); // mov ax, [0]
    }
    g.push(0xf4); // hlt
    g
}

/// The launcher's reader of KVM's format (written from api.rst, not from
/// rvmx's code).
#[allow(dead_code)]
#[path = "../../../../samples/rvmx-run/src/stats.rs"]
mod reader;
use reader::{read as read_stats, KVM_GET_STATS_FD};

fn stats_fd(fd: i32) -> Result<i32, String> {
    ioctl(fd, KVM_GET_STATS_FD, 0).map_err(|e| format!("KVM_GET_STATS_FD: errno {e}"))
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let rvmx = !path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(if rvmx { 14 } else { 8 });
    const KVM_CHECK_EXTENSION: u64 = 0xae03;
    let cap = ioctl(kvm.as_raw_fd(), KVM_CHECK_EXTENSION, CAP_BINARY_STATS_FD.into());
    t.check(cap.is_ok_and(|n| n > 0), "KVM_CHECK_EXTENSION(KVM_CAP_BINARY_STATS_FD) > 0", format!("{cap:?}"));

    let vm = TestVm::new(&kvm, 64 << 10);
    vm.write(0x1000, &guest());
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, 0x1000);
    let (mut outs, mut mmio, mut end) = (0, 0, String::new());
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x80, _)) => outs += 1,
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0);
                mmio += 1;
            }
            Ok(VcpuExit::Hlt) => break,
            other => {
                end = format!("{other:?}");
                break;
            }
        }
    }
    t.check(end.is_empty() && outs == OUTS && mmio == MMIO_READS, "the guest ran: 5 OUTs and 3 MMIO reads to userspace, then HLT", &end);

    let fd = stats_fd(vcpu.as_raw_fd());
    let s = fd.clone().and_then(read_stats);
    let ok = s.as_ref().is_ok_and(|s| s.id.ends_with("/vcpu-0"));
    t.check(ok, "KVM_GET_STATS_FD on the vCPU: a file in KVM's format, id ending in /vcpu-0", s.as_ref().map(|s| s.id.clone()).unwrap_or_else(|e| e.clone()));
    let get = |name: &str| s.as_ref().ok().and_then(|s| s.values.get(name).copied());
    // KVM counts one I/O exit per OUT and one MMIO exit per read to
    // userspace; HLT once; `exits` counts every exit, at least these.
    t.expect_eq(get("io_exits"), Some(OUTS.into()), "io_exits = the guest's OUTs");
    t.expect_eq(get("mmio_exits"), Some(MMIO_READS.into()), "mmio_exits = the guest's MMIO reads");
    t.expect_eq(get("halt_exits"), Some(1), "halt_exits = 1");
    let min = u64::from(OUTS + MMIO_READS + 1) + if rvmx { u64::from(CPUIDS) } else { 0 };
    t.check(get("exits").is_some_and(|n| n >= min), &format!("exits >= {min}"), format!("{:?}", get("exits")));
    if rvmx {
        // rvmx's per-reason counters: CPUID (10) is handled in the kernel.
        t.expect_eq(get("exit_reason_10"), Some(CPUIDS.into()), "exit_reason_10 (CPUID) = the guest's CPUIDs");
        t.expect_eq(get("exit_reason_12"), Some(1), "exit_reason_12 (HLT) = 1");
        let vmfd = stats_fd(vm.vm.as_raw_fd()).and_then(read_stats);
        let v = |n: &str| vmfd.as_ref().ok().and_then(|s| s.values.get(n).copied());
        t.check(
            v("memory_slots") == Some(1) && v("pages_4k").is_some_and(|n| n >= 1) && v("ept_tables").is_some_and(|n| n >= 4),
            "KVM_GET_STATS_FD on the VM: 1 slot, pages mapped, EPT tables",
            format!("slots {:?} pages_4k {:?} tables {:?}", v("memory_slots"), v("pages_4k"), v("ept_tables")),
        );
    }
    if let Ok(fd) = fd {
        // SAFETY: closes the stats fd we own.
        unsafe { libc::close(fd) };
    }

    // --- A read of the VM's statistics does not walk the guest's memory:
    // with 64 MiB (16,384 pages) mapped it costs what it costs with 64 KiB
    // (16 pages).
    // (rvmx used to count the pinned pages and EPT tables at each read,
    // under the VM's memory lock: 2.5 ms a read for 64 MiB.)
    const READS: u32 = 200;
    match (touched_vm(&kvm, 64 << 10), touched_vm(&kvm, 64 << 20)) {
        (Ok((_, _, small)), Ok((big_vm, _big_vcpu, big))) => {
            let (cost_small, cost_big) = (read_cost(small, READS), read_cost(big, READS));
            println!("# VM stats read: {cost_small:.1} µs with 64 KiB mapped, {cost_big:.1} µs with 64 MiB mapped (mean of {READS})");
            t.check(cost_big < 2.0 * cost_small + 20.0, "a VM stats read costs the same with 64 MiB mapped as with 64 KiB",
                    format!("{cost_small:.1} µs vs {cost_big:.1} µs"));
            if rvmx {
                // rvmx's own counters (KVM has none of these names): exact.
                // 64 MiB at 0 in 4 KiB pages: the root, a PDPT, a PD and 32
                // page tables.
                let big_stats = read_stats(big);
                let v = |n: &str| big_stats.as_ref().ok().and_then(|s| s.values.get(n).copied());
                t.expect_eq((v("pages_4k"), v("ept_tables"), v("memory_slots")), (Some(16384), Some(35), Some(1)),
                            "64 MiB touched: pages_4k 16384, ept_tables 35, memory_slots 1");
                let small_stats = read_stats(small);
                let v = |n: &str| small_stats.as_ref().ok().and_then(|s| s.values.get(n).copied());
                t.expect_eq((v("pages_4k"), v("ept_tables")), (Some(16), Some(4)), "64 KiB touched: pages_4k 16, ept_tables 4");
                let gone = kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 };
                // SAFETY: deletes the slot.
                let del = unsafe { big_vm.set_user_memory_region(gone) }.map_err(|e| e.to_string());
                let after = read_stats(big);
                let v = |n: &str| after.as_ref().ok().and_then(|s| s.values.get(n).copied());
                t.expect_eq((del, v("pages_4k"), v("ept_tables"), v("memory_slots")), (Ok(()), Some(0), Some(35), Some(0)),
                            "slot deleted: pages_4k 0, memory_slots 0 (EPT tables stay until the VM goes)");
            }
        }
        (a, b) => {
            let e = format!("{:?} / {:?}", a.err(), b.err());
            t.check(false, "a VM stats read costs the same with 64 MiB mapped as with 64 KiB", &e);
            if rvmx {
                t.check(false, "64 MiB touched: pages_4k 16384, ept_tables 35, memory_slots 1", &e);
                t.check(false, "64 KiB touched: pages_4k 16, ept_tables 4", &e);
                t.check(false, "slot deleted: pages_4k 0, memory_slots 0 (EPT tables stay until the VM goes)", &e);
            }
        }
    }
    t.finish();
}
