//! Exceptions the hypervisor must intercept or deliver itself, on
//! /dev/rvmx (or /dev/kvm, the first argument). Prints TAP.
//!
//! `exceptions DEVICE` (in tests/guest/vm.sh): guests/debug.asm raises
//! seven exceptions that the hypervisor delivers, not the CPU (the single
//! step after an emulated instruction, and after a HLT that went to the
//! VMM, a #GP for a refused MOV to CR4, the #DB of DR7.GD, ICEBP's #DB, a
//! reinjected #AC), and the frame, DR6 and
//! DR7 its handler sees must be what bare metal gives: RF set for faults,
//! DR6.BS / BD, DR7.GD cleared. Then a hardware watchpoint in this (host)
//! thread, on the CPU where the guest single-stepped, must fire once and
//! raise no SIGTRAP: the guest's debug status must not stay in the host's
//! DR6.
//!
//! `exceptions DEVICE wedge` (tests/guest/wedge.sh, a boot of its own):
//! guests whose exception delivery never ends unless the hypervisor
//! intercepts it (CVE-2015-5307 for #AC, CVE-2015-8104 for #DB:
//! guests/ac_loop.asm, guests/db_loop.asm). On a hypervisor that does not
//! intercept, the emulated CPU is lost and this program never prints its
//! result: the boot ends by its time-out, a failure.

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::{install_empty_handler, ioctl, protected_mode, read_count, watchpoint, Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

const DEBUG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/debug.bin"));
const AC_LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ac_loop.bin"));
const DB_LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/db_loop.bin"));
const CODE: u64 = 0x1000;
const MEM: usize = 2 << 20;

/// KVM_INTERNAL_ERROR_SIMUL_EX: an exception while delivering another.
const SIMUL_EX: u32 = 2;
const RF: u32 = 1 << 16;
const TF: u32 = 1 << 8;
const AC: u32 = 1 << 18;
const DR6_BS: u32 = 1 << 14;

/// One exception as guests/debug.asm's handler reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Report {
    step: u8,
    vector: u32,
    code: u32,
    eip: u32,
    eflags: u32,
    dr6: u32,
    dr7: u32,
}

/// Runs debug.asm to its end: the reports, the HLT exits, and how it
/// ended.
fn run_debug(vcpu: &mut VcpuFd) -> (Vec<Report>, u32, Result<u8, String>) {
    let mut reports = Vec::new();
    let mut hlts = 0;
    let mut words = Vec::new();
    let mut step = 0;
    // SAFETY: alarm(2) only schedules SIGALRM, which ends a stuck KVM_RUN
    // with EINTR (empty handler installed in main).
    unsafe { libc::alarm(20) };
    let end = loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0xe0, d)) if d.len() == 4 => {
                words.push(u32::from_le_bytes(d.try_into().unwrap()));
                if words.len() == 6 {
                    let w = &words;
                    reports.push(Report { step, vector: w[0], code: w[1], eip: w[2], eflags: w[3], dr6: w[4], dr7: w[5] });
                    words.clear();
                }
            }
            Ok(VcpuExit::IoOut(0xe1, d)) => {
                step = d[0];
                words.clear();
            }
            Ok(VcpuExit::IoOut(0xe2, d)) => break Ok(d[0]),
            // The VMM's part of a HLT: nothing to wait for; run again.
            Ok(VcpuExit::Hlt) => hlts += 1,
            Ok(e) => break Err(format!("step {step}: unexpected exit {e:?}")),
            Err(e) => break Err(format!("step {step}: KVM_RUN: {e}")),
        }
    };
    // SAFETY: cancels the alarm.
    unsafe { libc::alarm(0) };
    (reports, hlts, end)
}

static SIGTRAPS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigtrap(_: libc::c_int) {
    SIGTRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Keeps this thread on CPU 0, where the guest runs and the host's
/// watchpoint then fires: a leak in DR6 would be in that CPU's register.
fn pin_to_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity for this thread only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn guest_checks(kvm: &Kvm, t: &mut Tap) {
    let pinned = pin_to_cpu0();
    let vm = TestVm::new(kvm, MEM);
    vm.write(CODE, DEBUG);
    let mut vcpu = vm.real_mode_vcpu(kvm, 0, CODE);
    protected_mode(&vcpu);
    let addr = |i: usize| u32::from_le_bytes(DEBUG[4 + 4 * i..8 + 4 * i].try_into().unwrap());
    let (after_nop, after_cpuid, mov_cr4, mov_dr0, after_icebp, after_hlt, misaligned) =
        (addr(0), addr(1), addr(2), addr(3), addr(4), addr(5), addr(6));
    let (reports, hlts, end) = run_debug(&mut vcpu);
    for r in &reports {
        println!("# step {}: vector {} code {:#x} eip {:#x} eflags {:#x} dr6 {:#x} dr7 {:#x}",
                 r.step, r.vector, r.code, r.eip, r.eflags, r.dr6, r.dr7);
    }
    let of = |step: u8| reports.iter().find(|r| r.step == step).copied();
    let mut check = |step: u8, ok: &dyn Fn(&Report) -> bool, name: &str| {
        let r = of(step);
        t.check(r.as_ref().is_some_and(ok), name, format!("{r:?}"));
    };
    check(1, &|r| r.vector == 1 && r.eip == after_nop && r.dr6 == 0xffff_4ff0 && r.eflags & TF != 0 && r.eflags & RF == 0,
          "single step over a NOP: #DB after it, DR6 = 0xffff4ff0 (BS)");
    check(2, &|r| r.vector == 1 && r.eip == after_cpuid && r.dr6 & DR6_BS != 0 && r.eflags & TF != 0,
          "single step over CPUID, which the hypervisor emulates: #DB after it, DR6.BS");
    check(3, &|r| r.vector == 13 && r.code == 0 && r.eip == mov_cr4 && r.eflags & RF != 0,
          "MOV to CR4 with VMXE refused: #GP(0) at the MOV, RF set in the frame (a fault)");
    check(4, &|r| r.vector == 1 && r.eip == mov_dr0 && r.dr6 == 0xffff_2ff0 && r.dr7 == 0x400,
          "MOV from DR0 with DR7.GD set: #DB at the MOV, DR6 = 0xffff2ff0 (BD), DR7.GD cleared");
    check(5, &|r| r.vector == 1 && r.eip == after_icebp && r.eflags & RF == 0,
          "ICEBP: #DB after it");
    check(6, &|r| r.vector == 1 && r.eip == after_hlt && r.dr6 == 0xffff_4ff0 && hlts == 1,
          "HLT with TF set: KVM_EXIT_HLT, then at the next KVM_RUN the #DB after the HLT (DR6.BS)");
    check(7, &|r| r.vector == 17 && r.code == 0 && r.eip == misaligned && r.eflags & (RF | AC) == RF | AC,
          "misaligned load in ring 3 with CR0.AM and EFLAGS.AC: #AC(0) at the load, RF set");
    t.check(end == Ok(0) && reports.len() == 7, "the guest ran every step to its end",
            format!("{end:?}, {} reports, {hlts} HLT exits", reports.len()));

    // The host's watchpoint, after the guest single-stepped on this CPU.
    let target: *mut u64 = Box::into_raw(Box::new(0u64));
    let wp = watchpoint(target);
    let (fired, traps) = match wp {
        Ok(fd) => {
            let before = SIGTRAPS.load(Ordering::Relaxed);
            // SAFETY: a volatile write to our own (leaked) box: the
            // watched store.
            unsafe { std::ptr::write_volatile(target, 1) };
            let n = read_count(fd);
            // SAFETY: closes the perf fd opened above.
            unsafe { libc::close(fd) };
            (n, SIGTRAPS.load(Ordering::Relaxed) - before)
        }
        Err(_) => (0, 0),
    };
    t.check(pinned && wp.is_ok() && fired == 1 && traps == 0,
            "after the guest single-stepped, a host watchpoint on the same CPU fires once and raises no SIGTRAP",
            format!("pinned {pinned}, perf {wp:?}, fired {fired} times, {traps} SIGTRAPs"));
}

fn wedge_checks(kvm: &Kvm, t: &mut Tap, is_kvm: bool) {
    // #AC: the second #AC comes during the delivery of the first.
    let vm = TestVm::new(kvm, MEM);
    vm.write(CODE, AC_LOOP);
    let mut vcpu = vm.real_mode_vcpu(kvm, 0, CODE);
    protected_mode(&vcpu);
    println!("# #AC loop: running");
    // SAFETY: see run_debug.
    unsafe { libc::alarm(10) };
    let r = run_past_mark(&mut vcpu);
    // SAFETY: cancels the alarm.
    unsafe { libc::alarm(0) };
    // SAFETY: reading the internal-error fields of the run page after an
    // exit that filled them (a union: plain integers).
    let (sub, data) = unsafe {
        let i = vcpu.get_kvm_run().__bindgen_anon_1.internal;
        (i.suberror, i.data)
    };
    t.check(matches!(&r, Ok(s) if s == "InternalError") && sub == SIMUL_EX && data[1] & 0xff == 17 && data[0] & 0xff == 17,
            "#AC raised while delivering #AC (CVE-2015-5307): KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_SIMUL_EX",
            format!("{r:?}, suberror {sub}, data {:#x?}", &data[..4]));

    // #DB: each delivery trips the breakpoint again; each round an exit.
    let vm = TestVm::new(kvm, MEM);
    vm.write(CODE, DB_LOOP);
    let mut vcpu = vm.real_mode_vcpu(kvm, 0, CODE);
    vm.long_mode(&vcpu);
    println!("# #DB loop: running");
    let t0 = std::time::Instant::now();
    let before = exits(&vcpu, is_kvm);
    // SAFETY: see run_debug.
    unsafe { libc::alarm(2) };
    let r = run_past_mark(&mut vcpu);
    // SAFETY: cancels the alarm.
    unsafe { libc::alarm(0) };
    let secs = t0.elapsed().as_secs_f64();
    let n = exits(&vcpu, is_kvm).zip(before).map(|(a, b)| a.saturating_sub(b));
    println!("# #DB loop: ended after {secs:.1} s, {n:?} exits meanwhile (each #DB delivery one)");
    // Each delivery is an exit: at least the ICEBP's and the first
    // breakpoint's, however fast or slow the machine.
    t.check(matches!(&r, Err(e) if e.errno() == libc::EINTR) && n.is_some_and(|n| n >= 2),
            "#DB raised while delivering #DB (CVE-2015-8104): an exit each time, KVM_RUN ends at the VMM's signal with EINTR",
            format!("{r:?}, {n:?} exits"));
}

#[allow(dead_code)]
#[path = "../../../../samples/rvmx-run/src/stats.rs"]
mod reader;

/// The vCPU's exits so far, from its binary statistics
/// (KVM_GET_STATS_FD): rvmx's count of #DB/#AC exits (reason 0), KVM's
/// count of all exits.
fn exits(vcpu: &VcpuFd, is_kvm: bool) -> Option<u64> {
    let fd = ioctl(vcpu.as_raw_fd(), reader::KVM_GET_STATS_FD, 0).ok()?;
    let s = reader::read(fd).ok();
    // SAFETY: closes the stats fd we own.
    unsafe { libc::close(fd) };
    s?.values.get(if is_kvm { "exits" } else { "exit_reason_0" }).copied()
}

/// Runs the vCPU past the guest's "here it goes" (OUT to port 0xe1) to
/// the exit that follows, or the error.
fn run_past_mark(vcpu: &mut VcpuFd) -> Result<String, kvm_ioctls::Error> {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0xe1, _)) => continue,
            Ok(e) => return Ok(format!("{e:?}")),
            Err(e) => return Err(e),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| "/dev/rvmx".into());
    let wedge = args.get(2).is_some_and(|a| a == "wedge");
    let is_kvm = path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    install_empty_handler(libc::SIGALRM);
    // SAFETY: installs a handler that only bumps an atomic counter.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigtrap as *const () as usize;
        libc::sigaction(libc::SIGTRAP, &sa, std::ptr::null_mut());
    }
    if wedge {
        let mut t = Tap::plan(2);
        wedge_checks(&kvm, &mut t, is_kvm);
        t.finish();
    }
    let mut t = Tap::plan(9);
    guest_checks(&kvm, &mut t);
    t.finish();
}
