// SPDX-License-Identifier: GPL-2.0

//! Control-register accesses (reason 28). With EPT and unrestricted guest
//! the guest owns nearly all of CR0, CR3 and CR4. What exits is a MOV to
//! CR0 or CR4 that would change a bit the host owns (the guest/host masks,
//! vcpu/setup.rs): CR0.NE, CD, NW (VMX pins NE to 1; rvmx keeps caching on),
//! CR4.VMXE (pinned to 1, hidden from the guest) and CR4.MCE (the host's
//! value while the guest runs, the guest's in the shadow, as KVM's
//! vmx_set_cr4). rvmx then performs the
//! whole write: the guest's value goes to the read shadow, the adjusted one
//! to the VMCS, and turning paging on or off with EFER.LME set enters or
//! leaves long mode (EFER.LMA and the "IA-32e mode guest" entry control),
//! and loads the PDPTEs of 32-bit PAE paging, as the CPU would. MOV to/from CR8 (the task priority) also exits: there
//! is no local APIC in the kernel to give it to, so rvmx keeps the value,
//! and hands it to userspace in kvm_run.cr8 as KVM does without one.

use super::{Action, ExitCtx};
use crate::hw::cr::*;
use crate::uapi;
use crate::vmcs::guest;
use crate::vmcs::fields::*;
use crate::vmcs::qualification::{CrAccess, CrQual};
use crate::vmxon;
use kernel::prelude::*;

use crate::vmcs::intr::vector::GP;

pub(crate) fn cr_access(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let q = CrQual(ctx.vmcs.read(EXIT_QUALIFICATION).0);
    let (cr, access) = (q.cr(), q.access());
    let value = ctx.gpr(q.gpr());
    let caps = vmxon::caps().ok_or(EIO)?;
    match (access, cr) {
        (CrAccess::MovTo, 0) => {
            // The rules (and the long-mode switch) are hw/cr.rs's, shared
            // with KVM_SET_SREGS.
            let old = ctx.vmcs.guest_cr0();
            let efer = ctx.vmcs.read(GUEST_IA32_EFER);
            let cr4 = ctx.vmcs.guest_cr4();
            let cs_l = ctx.vmcs.read(GUEST_CS_AR) & (1 << 13) != 0;
            let Some(efer) = mov_to_cr0(old, value, efer, cr4, cs_l) else {
                return ctx.inject_exception(GP, Some(0));
            };
            guest::set_cr0(ctx.vmcs, &caps, value)?;
            ctx.vmcs.write(GUEST_IA32_EFER, efer)?;
            guest::set_long_mode(ctx.vmcs, efer & EFER_LMA != 0)?;
            ctx.flush_guest_tlb()?;
        }
        (CrAccess::MovTo, 4) => {
            let (old, efer, cr3) = (ctx.vmcs.guest_cr4(), ctx.vmcs.read(GUEST_IA32_EFER), ctx.vmcs.read(GUEST_CR3).0);
            if !mov_to_cr4(old, value, efer, cr3, caps.cr4_fixed1) {
                return ctx.inject_exception(GP, Some(0));
            }
            guest::set_cr4(ctx.vmcs, &caps, value)?;
            ctx.flush_guest_tlb()?;
        }
        (CrAccess::MovTo, 8) => {
            if value >> 4 != 0 {
                return ctx.inject_exception(GP, Some(0));
            }
            ctx.guest.cr8 = value;
        }
        (CrAccess::MovFrom, 8) => {
            let cr8 = ctx.guest.cr8;
            ctx.set_gpr(q.gpr(), cr8)?;
        }
        _ => return Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, 28)),
    }
    ctx.skip_instruction()?;
    // 32-bit PAE paging: the CPU translates through four page-directory-
    // pointer entries (PDPTEs) that MOV to CR0/CR4 loads from the table at
    // CR3, and that VM entry loads from the VMCS. rvmx performed the write,
    // so it loads them: reading guest memory may sleep, so the run loop
    // does it outside the guest section (vm.rs `read_pdptes`).
    if cr <= 4 && access == CrAccess::MovTo && guest::pae_paging(ctx.vmcs) {
        return Ok(Action::LoadPdptes(ctx.vmcs.read(GUEST_CR3).0));
    }
    Ok(Action::Resume)
}
