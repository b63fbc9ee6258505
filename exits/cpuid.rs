// SPDX-License-Identifier: GPL-2.0

//! CPUID (reason 10): CPUID always exits in VMX non-root operation, so the
//! VMM decides what the guest sees. Once userspace has set a table with
//! KVM_SET_CPUID2 the guest sees exactly that table (a leaf or subleaf it
//! lacks reads as zeros), except OSXSAVE, which follows the guest's own
//! CR4 as on hardware. Before that, rvmx answers with what it supports on
//! this CPU (`supported`), with the vCPU's id as its APIC ID.
//!
//! `supported` is also KVM_GET_SUPPORTED_CPUID's answer: the host's CPUID
//! without what a guest of rvmx cannot use, because rvmx does not
//! virtualize it (VMX itself: no nested virtualization), or because using
//! it would need state VM entry and exit do not switch (PKRU, debug and
//! performance-monitoring MSRs; the CR4 bits hw/cr.rs refuses: PKU, LA57,
//! CET, PKS), or an execution control rvmx leaves off
//! (INVPCID, XSAVES), plus the "hypervisor present" bit and leaf
//! 0x40000000 naming rvmx.
//!
//! CPUID exits at every privilege level; where the guest turned on CPUID
//! faulting (msrs/emulated.rs), CPUID outside ring 0 gets #GP instead, as
//! on a CPU with that feature (KVM: kvm_emulate_cpuid).

use super::{Action, ExitCtx};
use crate::hw;
use crate::uapi::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use crate::guest::reg;
use crate::vmcs::intr::vector::GP;
use kernel::prelude::*;

/// "rvmxrvmxrvmx" in EBX, ECX, EDX of leaf 0x40000000.
const SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"rvmx"),
    u32::from_le_bytes(*b"rvmx"),
    u32::from_le_bytes(*b"rvmx"),
];

/// KVM_MAX_CPUID_ENTRIES: the most entries a table may have.
pub(crate) const MAX_ENTRIES: usize = 256;

pub(crate) fn cpuid(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    if ctx.guest.msrs.cpuid_faulting() && ctx.vmcs.guest_cpl() > 0 {
        return ctx.inject_exception(GP, Some(0));
    }
    // CAST: CPUID takes EAX and ECX.
    let leaf = ctx.regs[reg::RAX] as u32;
    let sub = ctx.regs[reg::RCX] as u32;
    let mut r = if ctx.guest.cpuid.is_empty() {
        let mut r = filtered(leaf, sub, ctx.guest.xfeatures);
        match leaf {
            1 => r[1] = (r[1] & 0x00ff_ffff) | (ctx.vcpu_id << 24),
            0xb | 0x1f => r[3] = ctx.vcpu_id,
            _ => {}
        }
        r
    } else {
        lookup(&ctx.guest.cpuid, leaf, sub)
    };
    if leaf == 1 {
        let osxsave = ctx.vmcs.guest_cr4() & (1 << 18) != 0;
        r[2] = (r[2] & !(1 << 27)) | (u32::from(osxsave) << 27);
    }
    for (i, v) in [reg::RAX, reg::RBX, reg::RCX, reg::RDX].into_iter().zip(r) {
        ctx.regs[i] = u64::from(v);
    }
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}

/// The entry of a table for (leaf, subleaf), or zeros.
fn lookup(table: &[kvm_cpuid_entry2], leaf: u32, sub: u32) -> [u32; 4] {
    table
        .iter()
        .find(|e| e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == sub))
        .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// The host's CPUID (leaf, subleaf), edited to what rvmx supports for a
/// guest that may enable the XCR0 components `host_xcr0` (the host's, less
/// PKRU: see vcpu/mod.rs `Guest::xfeatures`).
fn filtered(leaf: u32, sub: u32, host_xcr0: u64) -> [u32; 4] {
    let mut r = hw::cpuid(leaf, sub);
    match leaf {
        1 => {
            // ECX: DTES64, MONITOR, DS-CPL, VMX, SMX, EST, TM2, PDCM,
            // x2APIC, TSC-deadline (no local APIC to give them meaning, or
            // MSRs rvmx does not have); then "hypervisor present".
            r[2] &= !((1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 15) | (1 << 21) | (1 << 24));
            r[2] |= 1 << 31;
            // EDX: DS, ACPI, TM, PBE.
            r[3] &= !((1 << 21) | (1 << 22) | (1 << 29) | (1 << 31));
        }
        // Thermal and power management, performance monitoring, SGX,
        // processor trace: none.
        5 | 6 | 0xa | 0x12 | 0x14 => r = [0; 4],
        7 if sub == 0 => {
            // EBX: SGX, INVPCID (#UD without its execution control),
            // MPX (BNDCFGS is not switched), Intel PT.
            r[1] &= !((1 << 2) | (1 << 10) | (1 << 14) | (1 << 25));
            // ECX: PKU, OSPKE (PKRU is not switched), WAITPKG, CET shadow
            // stacks, LA57 (5-level paging) and PKS: CR4.PKE, CR4.CET,
            // CR4.LA57 and CR4.PKS are refused (hw/cr.rs
            // CR4_NOT_VIRTUALIZED), so offering them would promise what a
            // MOV to CR4 then refuses.
            r[2] &= !((1 << 3) | (1 << 4) | (1 << 5) | (1 << 7) | (1 << 16) | (1 << 31));
            if !rdtscp_allowed() {
                r[2] &= !(1 << 22); // RDPID
            }
            // EDX: CET indirect-branch tracking (CR4.CET, as above), and
            // the speculation-control MSRs rvmx does not have.
            r[3] &= !((1 << 20) | (0x3f << 26));
        }
        0xd if sub == 1 => r[0] &= !((1 << 3) | (1 << 4)), // XSAVES, XFD
        0xd if sub == 0 => {
            // The state components a guest may enable: those the host has.
            // CAST: low and high halves of XCR0.
            r[0] &= host_xcr0 as u32;
            r[3] &= (host_xcr0 >> 32) as u32;
        }
        0x8000_0001 if !rdtscp_allowed() => r[3] &= !(1 << 27),
        0x4000_0000 => r = [0x4000_0001, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
        0x4000_0001..=0x4fff_ffff => r = [0; 4],
        _ => {}
    }
    r
}

/// RDTSCP and RDPID raise #UD in the guest unless the "enable RDTSCP"
/// control is on, which rvmx turns on where the CPU allows it (vcpu/setup.rs).
fn rdtscp_allowed() -> bool {
    crate::vmxon::caps().is_some_and(|c| c.proc2.may_be_one & crate::vmcs::controls::proc2::ENABLE_RDTSCP != 0)
}

/// KVM_GET_SUPPORTED_CPUID: every leaf and subleaf of `filtered`.
pub(crate) fn supported() -> Result<KVec<kvm_cpuid_entry2>> {
    // An ioctl, not a guest section: the CPU's XCR0 is the host's. PKRU is
    // never offered (see vcpu/mod.rs `Guest::xfeatures`).
    let host_xcr0 = hw::xcr0() & !hw::cr::XFEATURE_PKRU;
    let mut v = KVec::new();
    let mut add = |leaf: u32, sub: u32, indexed: bool| -> Result {
        let r = filtered(leaf, sub, host_xcr0);
        let e = kvm_cpuid_entry2 {
            function: leaf,
            index: if indexed { sub } else { 0 },
            flags: if indexed { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
            ..Default::default()
        };
        if v.len() < MAX_ENTRIES {
            v.push(e, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(())
    };
    let max_basic = hw::cpuid(0, 0)[0].min(0x1f);
    for leaf in 0..=max_basic {
        match leaf {
            // Cache parameters: until the "null" type.
            4 => {
                for sub in 0..16 {
                    add(4, sub, true)?;
                    if hw::cpuid(4, sub)[0] & 0x1f == 0 {
                        break;
                    }
                }
            }
            7 => {
                for sub in 0..=hw::cpuid(7, 0)[0].min(2) {
                    add(7, sub, true)?;
                }
            }
            // Topology: until the "invalid" level type.
            0xb | 0x1f => {
                for sub in 0..8 {
                    add(leaf, sub, true)?;
                    if hw::cpuid(leaf, sub)[2] & 0xff00 == 0 {
                        break;
                    }
                }
            }
            0xd => {
                for sub in 0..64 {
                    if sub < 2 || host_xcr0 & (1 << sub) != 0 {
                        add(0xd, sub, true)?;
                    }
                }
            }
            _ => add(leaf, 0, false)?,
        }
    }
    add(0x4000_0000, 0, false)?;
    add(0x4000_0001, 0, false)?;
    let max_ext = hw::cpuid(0x8000_0000, 0)[0].clamp(0x8000_0000, 0x8000_0021);
    for leaf in 0x8000_0000..=max_ext {
        add(leaf, 0, false)?;
    }
    Ok(v)
}
