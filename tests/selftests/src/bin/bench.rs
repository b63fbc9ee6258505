//! Exit-path benchmark on /dev/rvmx or (first argument) /dev/kvm: the cost
//! of one VM exit handled in the kernel (CPUID) and of one that goes to
//! userspace and back (OUT), measured over many rounds of
//! guests/exits.asm. It prints figures (in the emulated machine they are
//! relative, not hardware numbers); the one TAP check is that the guests
//! ran to completion.

use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::time::Instant;

const EXITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exits.bin"));

/// Runs `rounds` exits of kind `kind`; returns the time per exit in µs.
fn bench(kvm: &Kvm, kind: u64, rounds: u64) -> Option<f64> {
    let vm = TestVm::new(kvm, 0x80000);
    vm.write(0x1000, EXITS);
    let mut vcpu = vm.real_mode_vcpu(kvm, 0, 0x1000);
    let mut r = vcpu.get_regs().ok()?;
    r.rcx = rounds;
    r.rbx = kind;
    vcpu.set_regs(&r).ok()?;
    let start = Instant::now();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(..)) => {}
            Ok(VcpuExit::Hlt) => break,
            _ => return None,
        }
    }
    Some(start.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let kvm = Kvm::new_with_path(CString::new(path.clone()).unwrap()).expect("open device");
    let mut t = Tap::plan(1);
    let cpuid = bench(&kvm, 0, 20_000);
    let out = bench(&kvm, 1, 5_000);
    if let (Some(c), Some(o)) = (cpuid, out) {
        println!("# bench {path}: CPUID exit (in the kernel) {c:.2} us; OUT exit (to userspace and back) {o:.2} us");
    }
    t.check(cpuid.is_some() && out.is_some(), "benchmark guests ran to HLT", format!("{cpuid:?} {out:?}"));
    t.finish();
}
