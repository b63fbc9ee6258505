// SPDX-License-Identifier: GPL-2.0

//! The control-register and EFER bits rvmx names, and the architectural
//! rules for their values, in one place: what a MOV to CR0 or CR4 accepts
//! (exits/cr.rs, which injects #GP otherwise) and what KVM_SET_SREGS accepts
//! (vcpu/regs.rs, EINVAL otherwise), so the two can never disagree (SDM Vol.
//! 3A §2.5 "Control Registers", §4.1.1-4.1.2 paging modes and their
//! switches; KVM's kvm_set_cr0, kvm_set_cr4 and kvm_is_valid_sregs).
//!
//! Executes nothing: only `core`, so tests/unit checks the rules on the
//! build machine.

pub(crate) const CR0_PE: u64 = 1 << 0;
pub(crate) const CR0_NE: u64 = 1 << 5;
pub(crate) const CR0_NW: u64 = 1 << 29;
pub(crate) const CR0_CD: u64 = 1 << 30;
pub(crate) const CR0_PG: u64 = 1 << 31;
pub(crate) const CR4_PAE: u64 = 1 << 5;
/// Machine-check enable: owned by the host while the guest runs (see
/// vcpu/setup.rs `set_cr4`), the guest's own value kept in the read shadow.
pub(crate) const CR4_MCE: u64 = 1 << 6;
pub(crate) const CR4_VMXE: u64 = 1 << 13;
pub(crate) const CR4_PCIDE: u64 = 1 << 17;
pub(crate) const CR4_FRED: u64 = 1 << 32;
/// XCR0 bit 9: the PKRU state component.
pub(crate) const XFEATURE_PKRU: u64 = 1 << 9;
/// CR4 bits whose state rvmx does not switch between guest and host,
/// so a guest may never set them, whatever its CPUID says: LA57
/// (5-level paging: the software page walk has 4 levels), PKE and PKS
/// (protection keys: PKRU and IA32_PKRS would stay the guest's), CET
/// (shadow stacks: IA32_S_CET and the SSP are not switched). They are
/// owned by rvmx in the VMCS (a MOV to CR4 exits) and refused with #GP
/// there and EINVAL in KVM_SET_SREGS, as KVM does for bits it does not
/// support.
pub(crate) const CR4_NOT_VIRTUALIZED: u64 = (1 << 12) | (1 << 22) | (1 << 23) | (1 << 24);
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;

/// Whether a CPU accepts this CR0 value: not paging without protection,
/// not not-write-through without cache-disable, no bit of 63:32 set.
pub(crate) fn cr0_valid(cr0: u64) -> bool {
    let paging_unprotected = cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0;
    let nw_without_cd = cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0;
    !paging_unprotected && !nw_without_cd && cr0 >> 32 == 0
}

/// A CR4 value a guest may have: none of the bits rvmx does not
/// virtualize (VMXE, `CR4_NOT_VIRTUALIZED`), none the CPU forbids in VMX
/// operation (`fixed1`: IA32_VMX_CR4_FIXED1).
pub(crate) fn cr4_valid(cr4: u64, fixed1: u64) -> bool {
    cr4 & (CR4_VMXE | CR4_NOT_VIRTUALIZED) == 0 && cr4 & !fixed1 == 0
}

/// KVM_SET_SREGS: whether CR0, CR4 and EFER together are a state a vCPU
/// can be in. Long mode (EFER.LME with paging) needs PAE and EFER.LMA;
/// EFER.LMA needs long mode.
pub(crate) fn sregs_valid(cr0: u64, cr4: u64, efer: u64, cr4_fixed1: u64) -> bool {
    let long = efer & EFER_LME != 0 && cr0 & CR0_PG != 0;
    let modes = if long { cr4 & CR4_PAE != 0 && efer & EFER_LMA != 0 } else { efer & EFER_LMA == 0 };
    modes && cr0_valid(cr0) && cr4_valid(cr4, cr4_fixed1)
}

/// MOV to CR0 from `old` to `new`, with `efer`, `cr4` and CS.L (`cs_l`) as
/// they are: the EFER the CPU would have after it (turning paging on with
/// EFER.LME set enters long mode, turning it off leaves), or `None` where
/// the CPU raises #GP. Long mode is entered only with PAE and from 32-bit
/// code; paging is turned off neither by 64-bit code nor with PCIDs on.
pub(crate) fn mov_to_cr0(old: u64, new: u64, efer: u64, cr4: u64, cs_l: bool) -> Option<u64> {
    if !cr0_valid(new) {
        return None;
    }
    if new & CR0_PG != 0 && old & CR0_PG == 0 {
        if efer & EFER_LME == 0 {
            return Some(efer);
        }
        if cr4 & CR4_PAE == 0 || cs_l {
            return None;
        }
        return Some(efer | EFER_LMA);
    }
    if new & CR0_PG == 0 {
        if (efer & EFER_LMA != 0 && cs_l) || cr4 & CR4_PCIDE != 0 {
            return None;
        }
        return Some(efer & !EFER_LMA);
    }
    Some(efer)
}

/// MOV to CR4 from `old` to `new` with `efer` and `cr3` as they are:
/// whether the CPU accepts it. In long mode PAE stays on; PCIDs come on
/// only in long mode with CR3[11:0] = 0.
pub(crate) fn mov_to_cr4(old: u64, new: u64, efer: u64, cr3: u64, cr4_fixed1: u64) -> bool {
    let lma = efer & EFER_LMA != 0;
    cr4_valid(new, cr4_fixed1)
        && !(lma && new & CR4_PAE == 0)
        && !(new & CR4_PCIDE != 0 && old & CR4_PCIDE == 0 && (!lma || cr3 & 0xfff != 0))
}
