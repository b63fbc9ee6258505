//! KVM_GET_STATS_FD: the binary statistics of a vCPU and a VM, read by a
//! small reader of KVM's documented format (api.rst "KVM_GET_STATS_FD";
//! written here from the documentation, not from rvmx's code), after a
//! guest that makes a known number of each exit. On /dev/rvmx and, given
//! as the first argument, /dev/kvm: the counters both have must agree with
//! the guest; rvmx's per-reason counters too. Prints TAP.

use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{ioctl, Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;

/// KVM_CAP_BINARY_STATS_FD.
const CAP_BINARY_STATS_FD: u32 = 203;

const CPUIDS: u32 = 7;
const OUTS: u32 = 5;
const MMIO_READS: u32 = 3;

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
    let mut t = Tap::plan(if rvmx { 10 } else { 7 });
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
            v("memory_slots") == Some(1) && v("pages_pinned").is_some_and(|n| n >= 1) && v("ept_tables").is_some_and(|n| n >= 4),
            "KVM_GET_STATS_FD on the VM: 1 slot, pages pinned, EPT tables",
            format!("slots {:?} pinned {:?} tables {:?}", v("memory_slots"), v("pages_pinned"), v("ept_tables")),
        );
    }
    if let Ok(fd) = fd {
        // SAFETY: closes the stats fd we own.
        unsafe { libc::close(fd) };
    }
    t.finish();
}
