//! The VM-entry failure explainer: register sets that each break one rule
//! of the SDM's guest-state checks (Vol. 3C §27.3.1), set through the KVM
//! ioctls a VMM uses, must end KVM_RUN with KVM_EXIT_FAIL_ENTRY, hardware
//! reason 0x80000021 ("invalid guest state"), and on rvmx the rule's
//! number in `struct rvmx_fail_entry` (uapi/rvmx.h) and in the
//! exit-information page. Given /dev/kvm, it checks only the KVM part:
//! the same state fails the same way there (KVM, like rvmx, passes an
//! unrestricted guest's segments to the CPU unchecked). Prints TAP.

use kvm_bindings::{kvm_regs, kvm_sregs, KVM_VCPUEVENT_VALID_SHADOW};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;

// The control bits vmcs/checks.rs tests (`super::controls` there).
#[allow(dead_code)]
#[path = "../../../../vmcs/controls.rs"]
mod controls;
#[allow(dead_code)]
#[path = "../../../../vmcs/checks.rs"]
mod checks;
use checks::{Check, Seg};

/// rvmx's exit-information page (uapi/rvmx.h).
const RVMX_EXIT_INFO_PAGE: i64 = 3;

/// What one case does to the reset state: sregs, regs, and the interrupt
/// shadow (KVM_X86_SHADOW_INT_STI = 2), before the one KVM_RUN.
struct Case {
    name: &'static str,
    want: Check,
    seg: Option<Seg>,
    edit: fn(&mut kvm_sregs, &mut kvm_regs, &mut u8),
}

fn protected(s: &mut kvm_sregs) {
    s.cr0 |= 1;
    for d in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        d.selector = 0x10;
        d.type_ = 3;
        d.s = 1;
        d.present = 1;
    }
    s.cs.selector = 0x8;
    s.cs.type_ = 11;
}

fn long_mode(s: &mut kvm_sregs) {
    protected(s);
    s.cr3 = 0x9000;
    s.cr4 |= 1 << 5;
    s.cr0 |= 1 << 31;
    s.efer |= (1 << 8) | (1 << 10);
    s.cs.l = 1;
    s.cs.db = 0;
}

const CASES: &[Case] = &[
    Case { name: "CS of type 1 (data, not accessed)", want: Check::CsType, seg: Some(Seg::Cs), edit: |s, _, _| s.cs.type_ = 1 },
    Case { name: "SS of type 11 (code)", want: Check::SsType, seg: Some(Seg::Ss), edit: |s, _, _| s.ss.type_ = 11 },
    Case { name: "LDTR selector with TI = 1", want: Check::LdtrTi, seg: Some(Seg::Ldtr), edit: |s, _, _| s.ldt.selector = 4 },
    Case { name: "ES a system segment (S = 0)", want: Check::SegS, seg: Some(Seg::Es), edit: |s, _, _| s.es.s = 0 },
    Case { name: "TR selector with TI = 1", want: Check::TrTi, seg: Some(Seg::Tr), edit: |s, _, _| s.tr.selector = 0x1c },
    Case { name: "real mode with SS.DPL 3 (CS a data segment)", want: Check::SsDplRealMode, seg: Some(Seg::Ss), edit: |s, _, _| { s.cs.type_ = 3; s.ss.dpl = 3 } },
    Case { name: "GS limit 0xfffff000 with G = 0", want: Check::Granularity, seg: Some(Seg::Gs), edit: |s, _, _| { s.gs.limit = 0xffff_f000; s.gs.g = 0 } },
    Case { name: "CS base above 4 GiB", want: Check::BaseHigh, seg: Some(Seg::Cs), edit: |s, _, _| s.cs.base = 1 << 32 },
    Case { name: "FS base not canonical", want: Check::BaseCanonical, seg: Some(Seg::Fs), edit: |s, _, _| s.fs.base = 0x8000_0000_0000 },
    Case { name: "TR an available TSS (type 9)", want: Check::TrType, seg: Some(Seg::Tr), edit: |s, _, _| s.tr.type_ = 9 },
    Case { name: "TR unusable", want: Check::TrUnusable, seg: Some(Seg::Tr), edit: |s, _, _| s.tr.unusable = 1 },
    Case { name: "LDTR usable but of type 3", want: Check::LdtrType, seg: Some(Seg::Ldtr), edit: |s, _, _| { s.ldt.type_ = 3; s.ldt.present = 1; s.ldt.unusable = 0 } },
    Case { name: "GDTR base not canonical", want: Check::TableCanonical, seg: None, edit: |s, _, _| s.gdt.base = 0x8000_0000_0000 },
    Case { name: "long mode, CS.L and CS.D both 1", want: Check::CsLongAndDb, seg: Some(Seg::Cs), edit: |s, _, _| { long_mode(s); s.cs.db = 1 } },
    Case { name: "RIP above 4 GiB outside 64-bit mode", want: Check::RipHigh, seg: None, edit: |_, r, _| r.rip = 1 << 32 },
    Case { name: "RFLAGS bit 15 (reserved) set", want: Check::RflagsReserved, seg: None, edit: |_, r, _| r.rflags |= 1 << 15 },
    Case { name: "STI shadow with RFLAGS.IF = 0", want: Check::StiWithoutIf, seg: None, edit: |_, r, sh| { r.rflags &= !(1 << 9); *sh = 2 } },
];

/// States that must *not* fail the entry: the guest runs to its HLT.
/// A named change to the reset state's special registers.
type Edit = (&'static str, fn(&mut kvm_sregs));

const RUNS: &[Edit] = &[
    // KVM sets the accessed bit of every segment but LDTR (older QEMU
    // leaves it clear); VM entry would refuse the state otherwise.
    ("DS of type 2 (accessed bit clear) is given its accessed bit, as KVM does", |s| s.ds.type_ = 2),
    ("SS of type 2 likewise", |s| s.ss.type_ = 2),
];

/// Not an SDM rule: Bochs 2.7 refuses a non-conforming CS whose selector
/// RPL differs from its DPL (rvmx names it, check 901). A CPU that follows
/// the SDM runs the guest.
fn bochs_rule(s: &mut kvm_sregs) {
    protected(s);
    s.cs.selector = 0xb;
}

/// The check number, segment and value rvmx put after KVM's fail_entry.
fn explained(vcpu: &mut VcpuFd) -> (u16, u8, u64) {
    let r = vcpu.get_kvm_run();
    // SAFETY: the exit union is 256 plain bytes; any bit pattern is valid.
    let u: [u8; 256] = unsafe { std::mem::transmute(r.__bindgen_anon_1) };
    (u16::from_ne_bytes([u[12], u[13]]), u[14], u64::from_ne_bytes(u[16..24].try_into().unwrap()))
}

/// The check number rvmx put in the exit-information page (bytes 68-69
/// of struct rvmx_exit_info).
fn info_page_check(vcpu: &VcpuFd) -> Option<u16> {
    // SAFETY: a read-only mapping of rvmx's info page, unmapped below.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, vcpu.as_raw_fd(), RVMX_EXIT_INFO_PAGE * 4096)
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the page is mapped and 4096 bytes long.
    let c = unsafe { (p as *const u8).add(68).cast::<u16>().read_volatile() };
    // SAFETY: unmaps what was mapped above.
    unsafe { libc::munmap(p, 4096) };
    Some(c)
}

/// A fresh VM (64 KiB, HLT at 0x1000) and vCPU in the reset state as
/// `edit` changes it. Panics if the device refuses the state: every state
/// here is one KVM_SET_SREGS/REGS/VCPU_EVENTS accept.
fn vcpu_with(kvm: &Kvm, edit: impl Fn(&mut kvm_sregs, &mut kvm_regs, &mut u8)) -> (TestVm, VcpuFd) {
    let vm = TestVm::new(kvm, 64 << 10);
    vm.write(0x1000, &[0xf4]); // HLT, should the entry not fail
    let vcpu = vm.real_mode_vcpu(kvm, 0, 0x1000);
    let mut s = vcpu.get_sregs().expect("KVM_GET_SREGS");
    let mut r = vcpu.get_regs().expect("KVM_GET_REGS");
    let mut shadow = 0u8;
    edit(&mut s, &mut r, &mut shadow);
    vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
    vcpu.set_regs(&r).expect("KVM_SET_REGS");
    if shadow != 0 {
        let mut e = vcpu.get_vcpu_events().expect("KVM_GET_VCPU_EVENTS");
        e.interrupt.shadow = shadow;
        e.flags = KVM_VCPUEVENT_VALID_SHADOW;
        vcpu.set_vcpu_events(&e).expect("KVM_SET_VCPU_EVENTS");
    }
    (vm, vcpu)
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let rvmx = !path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(CASES.len() + RUNS.len() + 1);
    let mut named = 0;
    for c in CASES {
        let (_vm, mut vcpu) = vcpu_with(&kvm, c.edit);
        let exit = match vcpu.run() {
            Ok(VcpuExit::FailEntry(reason, _)) => Ok(reason),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(format!("KVM_RUN: {e}")),
        };
        let name = format!("{}: fails the entry, {}", c.name, if rvmx { "named as its rule" } else { "as on rvmx" });
        match exit {
            Ok(0x8000_0021) if !rvmx => t.check(true, &name, ""),
            Ok(0x8000_0021) => {
                let (check, seg, value) = explained(&mut vcpu);
                let page = info_page_check(&vcpu);
                let want_seg = c.seg.map_or(0, |s| s as u8);
                let ok = check == c.want as u16 && seg == want_seg && page == Some(check);
                named += usize::from(ok);
                let got = Check::from_number(check).map_or("none".into(), |k| format!("{k:?}"));
                t.check(ok, &name, format!("want {:?} ({}) segment {want_seg}, got {got} ({check}) segment {seg} value {value:#x}, info page {page:?}", c.want, c.want as u16));
            }
            Ok(other) => t.check(false, &name, format!("hardware reason {other:#x}, want 0x80000021")),
            Err(e) => t.check(false, &name, format!("the entry did not fail: {e}")),
        }
    }
    for (name, edit) in RUNS {
        let (vm, mut vcpu) = vcpu_with(&kvm, |s, _, _| edit(s));
        let got = vcpu.run().map(|e| format!("{e:?}")).unwrap_or_else(|e| format!("KVM_RUN: {e}"));
        t.check(got == "Hlt", name, format!("want the guest's HLT, got {got}"));
        drop(vm);
    }
    let (vm, mut vcpu) = vcpu_with(&kvm, |s, _, _| bochs_rule(s));
    let name = "protected mode, CS selector RPL 3 with DPL 0 (no SDM rule): runs, or fails as Bochs 2.7 does and is named so";
    match vcpu.run() {
        Ok(VcpuExit::Hlt) => t.check(true, name, "the CPU follows the SDM"),
        Ok(VcpuExit::FailEntry(0x8000_0021, _)) if !rvmx => t.check(true, name, "the CPU refused it (Bochs 2.7)"),
        Ok(VcpuExit::FailEntry(0x8000_0021, _)) => {
            let (check, _, value) = explained(&mut vcpu);
            t.check(check == Check::Bochs27CsRpl as u16, name, format!("named {check}, value {value:#x}"));
        }
        other => t.check(false, name, format!("{other:?}")),
    }
    drop(vm);
    if rvmx {
        println!("# entry failures explained: {named} of {} rules named correctly", CASES.len());
    }
    t.finish();
}
