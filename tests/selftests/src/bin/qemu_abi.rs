//! What QEMU 7.2 needs of a KVM device before and while it boots a guest
//! with its own (userspace) interrupt controllers (issue 11), on /dev/rvmx
//! or (first argument) /dev/kvm, the reference. Prints TAP.
//!
//! - The capabilities QEMU refuses to start without (accel/kvm/kvm-all.c
//!   `kvm_required_capabilites`, target/i386/kvm/kvm.c
//!   `kvm_arch_required_capabilities` and KVM_CAP_IRQ_ROUTING).
//! - KVM_GET_MP_STATE/KVM_SET_MP_STATE, which QEMU calls around every
//!   register transfer: RUNNABLE, the only state of a vCPU without an
//!   in-kernel local APIC.
//! - KVM_SET_GSI_ROUTING without an in-kernel irqchip: EINVAL.
//! - KVM_SET_MSRS with every MSR QEMU 7.2's kvm_put_msrs writes at reset for
//!   its default CPU (QEMU aborts if one is refused), then KVM_GET_MSRS of
//!   the same list reads the values back.
//! - KVM_CAP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED and KVM_X86_SETUP_MCE as
//!   QEMU uses them for a CPU with MCE and MCA (its default), then the
//!   machine-check MSRs it writes at reset.
//! - An IN whose exit the VMM handles after reading and writing back the
//!   registers (QEMU does, for some devices): the data still reaches AL.
//! - guests/firmware.asm: INVD, MONITOR/MWAIT, RDPMC, the MTRRs, the
//!   machine-check MSRs, the microcode revision, DEBUGCTL and MISC_ENABLE
//!   as firmware and Linux's early boot meet them.

use kvm_bindings::{kvm_mp_state, kvm_msr_entry, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use rvmx_selftests::{ioctl, Tap, TestVm};
use std::os::unix::io::AsRawFd;
use std::ffi::CString;

const FIRMWARE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/firmware.bin"));
const CODE: u64 = 0x1000;

/// KVM_CAP_* numbers QEMU 7.2 checks that kvm-ioctls' `Cap` does not name.
const KVM_CAP_DESTROY_MEMORY_REGION_WORKS: u64 = 21;
const KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: u64 = 30;
const KVM_CAP_MCE: u64 = 31;
/// _IOR(KVMIO, 0x9d, __u64) and _IOW(KVMIO, 0x9c, __u64).
const KVM_X86_GET_MCE_CAP_SUPPORTED: u64 = 0x8008_ae9d;
const KVM_X86_SETUP_MCE: u64 = 0x4008_ae9c;
/// MCG_CAP: MCG_CTL present, software error recovery.
const MCG_CTL_P: u64 = 1 << 8;
const MCG_SER_P: u64 = 1 << 24;

/// The MSRs QEMU 7.2's kvm_put_msrs (target/i386/kvm/kvm.c) writes at a
/// reset of its default CPU on a 64-bit host, with its reset values: the
/// SYSENTER MSRs, PAT, the syscall MSRs, TSC, KVM's old clock MSRs, and,
/// because the CPU has MTRR, MTRRdefType, the 11 fixed-range and 8 pairs
/// of variable-range MTRRs. STAR only where KVM_GET_MSR_INDEX_LIST lists
/// it (`has_msr_star`), as QEMU does; then the same with live-looking
/// values (a BIOS's MTRR set-up).
fn qemu_reset_msrs(with_star: bool, live: bool) -> Vec<(u32, u64)> {
    let v = |reset: u64, set: u64| if live { set } else { reset };
    let mut m = vec![
        (0x174, v(0, 0x10)),                 // SYSENTER_CS
        (0x175, v(0, 0xffff_ffff_8000_0000)), // SYSENTER_ESP
        (0x176, v(0, 0xffff_ffff_8100_0000)), // SYSENTER_EIP
        (0x277, 0x0007_0406_0007_0406),       // PAT
    ];
    if with_star {
        m.push((0xc000_0081, v(0, 0x0023_0010_0000_0000))); // STAR
    }
    m.extend([
        (0xc000_0083, v(0, 0xffff_ffff_8100_1000)), // CSTAR
        (0xc000_0102, v(0, 0x7f00_0000_0000)),      // KERNEL_GS_BASE
        (0xc000_0084, v(0, 0x4_7700)),              // SFMASK
        (0xc000_0082, v(0, 0xffff_ffff_8100_2000)), // LSTAR
        (0x10, 0),                                   // TSC (not read back)
        (0x12, 0),                                   // MSR_KVM_SYSTEM_TIME
        (0x11, 0),                                   // MSR_KVM_WALL_CLOCK
        (0x2ff, v(0, 0xc06)),                        // MTRRdefType
    ]);
    for msr in [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f] {
        m.push((msr, v(0, 0x0606_0606_0606_0606)));
    }
    for i in 0..8 {
        m.push((0x200 + 2 * i, v(0, if i == 0 { 0x8000_0000 } else { 0 })));
        m.push((0x201 + 2 * i, v(0, if i == 0 { 0xf_8000_0800 } else { 0 })));
    }
    m
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(13);

    let caps = [
        ("KVM_CAP_USER_MEMORY", kvm.check_extension_int(Cap::UserMemory)),
        ("KVM_CAP_DESTROY_MEMORY_REGION_WORKS", kvm.check_extension_raw(KVM_CAP_DESTROY_MEMORY_REGION_WORKS)),
        ("KVM_CAP_JOIN_MEMORY_REGIONS_WORKS", kvm.check_extension_raw(KVM_CAP_JOIN_MEMORY_REGIONS_WORKS)),
        ("KVM_CAP_SET_TSS_ADDR", kvm.check_extension_int(Cap::SetTssAddr)),
        ("KVM_CAP_EXT_CPUID", kvm.check_extension_int(Cap::ExtCpuid)),
        ("KVM_CAP_MP_STATE", kvm.check_extension_int(Cap::MpState)),
        ("KVM_CAP_IRQ_ROUTING", kvm.check_extension_int(Cap::IrqRouting)),
    ];
    let missing: Vec<_> = caps.iter().filter(|(_, v)| *v <= 0).map(|(n, _)| *n).collect();
    t.check(missing.is_empty(), "the capabilities QEMU 7.2 requires are all reported", format!("missing: {missing:?}"));

    let vm = TestVm::new(&kvm, 2 << 20);
    vm.write(CODE, FIRMWARE);
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);

    let got = vcpu.get_mp_state().map(|s| s.mp_state).map_err(|e| e.errno());
    t.expect_eq(got, Ok(KVM_MP_STATE_RUNNABLE), "KVM_GET_MP_STATE: RUNNABLE");
    let set = |s: u32| vcpu.set_mp_state(kvm_mp_state { mp_state: s }).map_err(|e| e.errno());
    t.expect_eq(set(KVM_MP_STATE_RUNNABLE), Ok(()), "KVM_SET_MP_STATE RUNNABLE: accepted");
    t.expect_eq((set(KVM_MP_STATE_HALTED), set(1000)), (Err(libc::EINVAL), Err(libc::EINVAL)),
                "KVM_SET_MP_STATE HALTED or unknown without an in-kernel APIC: EINVAL");

    let routing = kvm_bindings::KvmIrqRouting::new(0).unwrap();
    t.expect_eq(vm.vm.set_gsi_routing(&routing).map_err(|e| e.errno()), Err(libc::EINVAL),
                "KVM_SET_GSI_ROUTING without an in-kernel irqchip: EINVAL");

    let with_star = kvm.get_msr_index_list().is_ok_and(|l| l.as_slice().contains(&0xc000_0081));
    for live in [false, true] {
        let list = qemu_reset_msrs(with_star, live);
        let entries: Vec<_> = list.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let msrs = Msrs::from_entries(&entries).unwrap();
        let n = vcpu.set_msrs(&msrs).map_err(|e| e.errno());
        let refused = match n { Ok(n) if n < list.len() => format!("refused: {:#x}", list[n].0), other => format!("{other:?}") };
        t.check(n == Ok(list.len()), &format!("KVM_SET_MSRS of the {} MSRs QEMU 7.2 writes at reset{}: all accepted",
                list.len(), if live { " (set-up values)" } else { "" }), refused);
        let mut back = Msrs::from_entries(&list.iter().map(|&(index, _)| kvm_msr_entry { index, ..Default::default() }).collect::<Vec<_>>()).unwrap();
        let n = vcpu.get_msrs(&mut back).map_err(|e| e.errno());
        let wrong: Vec<_> = back.as_slice().iter().zip(&list)
            .filter(|(b, &(index, data))| index != 0x10 && b.data != data)
            .map(|(b, &(index, data))| format!("{index:#x}: {:#x} != {data:#x}", b.data)).collect();
        t.check(n == Ok(list.len()) && wrong.is_empty(), &format!("KVM_GET_MSRS reads them back{}", if live { " (set-up values)" } else { "" }),
                format!("{n:?} {wrong:?}"));
    }

    // Machine check as QEMU 7.2 sets it up for its default CPU
    // (kvm_arch_init_vcpu): the banks KVM_CAP_MCE allows (10 by default),
    // the offered capabilities among MCG_CTL_P | MCG_SER_P; then
    // kvm_put_msrs writes MCG_STATUS, MCG_CTL = ~0 and every bank's four
    // registers (CTL = ~0).
    let max_banks = kvm.check_extension_raw(KVM_CAP_MCE);
    let mut supported = 0u64;
    let got = ioctl(kvm.as_raw_fd(), KVM_X86_GET_MCE_CAP_SUPPORTED, &mut supported as *mut u64 as u64);
    let mcg_cap = (MCG_CTL_P | MCG_SER_P) & supported | 10;
    let setup = ioctl(vcpu.as_raw_fd(), KVM_X86_SETUP_MCE, &mcg_cap as *const u64 as u64);
    let mut list = vec![(0x17a, 0), (0x17b, !0u64)];
    for i in 0..10 * 4 {
        list.push((0x400 + i, if i % 4 == 0 { !0 } else { 0 }));
    }
    let entries: Vec<_> = list.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    let n = vcpu.set_msrs(&Msrs::from_entries(&entries).unwrap()).map_err(|e| e.errno());
    let mut cap = Msrs::from_entries(&[kvm_msr_entry { index: 0x179, ..Default::default() }]).unwrap();
    let _ = vcpu.get_msrs(&mut cap);
    t.check(
        max_banks >= 10 && got.is_ok() && supported & MCG_CTL_P != 0 && setup.is_ok() && n == Ok(list.len()) && cap.as_slice()[0].data == mcg_cap,
        "KVM_CAP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED (MCG_CTL_P), KVM_X86_SETUP_MCE(10 banks), then QEMU's machine-check MSRs: accepted, MCG_CAP reads back",
        format!("banks {max_banks} supported {got:?} {supported:#x} setup {setup:?} set_msrs {n:?}/{} MCG_CAP {:#x}", list.len(), cap.as_slice()[0].data),
    );

    // The guest: its OUTs in order, then HLT.
    let mut outs = Vec::new();
    let mut end = None;
    for _ in 0..20 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut v = [0u8; 4];
                v[..data.len()].copy_from_slice(data);
                outs.push((port, u32::from_le_bytes(v)));
            }
            other => {
                end = Some(format!("{other:?}"));
                break;
            }
        }
    }
    t.expect_eq(end.as_deref(), Some("Ok(Hlt)"), "firmware guest: INVD, MONITOR, MWAIT, RDPMC, MTRRs and machine-check MSRs, then HLT");
    // CAST: the low half of MCG_CAP, as the guest's RDMSR puts it in EAX.
    t.expect_eq(outs, vec![(0x10, 0x508), (0x11, mcg_cap as u32), (0x12, 0xc06), (0x14, 1), (0x15, 0), (0x16, 0x1800), (0x13, 2)],
                "MTRRcap = 0x508 (WC, fixed, 8 variable), MCG_CAP as set up, MTRRdefType read back, microcode revision 1 after Linux's write of 0, DEBUGCTL.BTF dropped, MISC_ENABLE = BTS and PEBS unavailable, #GP on RDPMC and on a non-zero MC0_STATUS");

    // IN AL, 0x60; OUT 0x61, AL; HLT, with KVM_GET_REGS and KVM_SET_REGS
    // (RIP unchanged) while the IN's exit is handled.
    let vm2 = TestVm::new(&kvm, 64 << 10);
    vm2.write(CODE, &[0xe4, 0x60, 0xe6, 0x61, 0xf4]);
    let mut v2 = vm2.real_mode_vcpu(&kvm, 0, CODE);
    let mut seen = Vec::new();
    for _ in 0..4 {
        match v2.run() {
            Ok(VcpuExit::IoIn(0x60, data)) => {
                data[0] = 0x5a;
                let regs = v2.get_regs().unwrap();
                v2.set_regs(&regs).unwrap();
                seen.push("in".to_string());
            }
            Ok(VcpuExit::IoOut(0x61, data)) => seen.push(format!("out {:#x}", data[0])),
            Ok(VcpuExit::Hlt) => {
                seen.push("hlt".into());
                break;
            }
            other => {
                seen.push(format!("{other:?}"));
                break;
            }
        }
    }
    t.expect_eq(seen, vec!["in".to_string(), "out 0x5a".into(), "hlt".into()],
                "an IN completed after KVM_GET_REGS/KVM_SET_REGS with RIP unchanged: its data reaches AL");
    t.finish()
}
