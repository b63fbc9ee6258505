// SPDX-License-Identifier: GPL-2.0

//! Exceptions in the guest that exit (reason 0, "exception or NMI"): the
//! vectors set in the *exception bitmap* (vcpu/setup.rs), and the #DB
//! rvmx raises itself after an instruction it emulated with RFLAGS.TF set.
//!
//! Why intercept any guest exception at all, when the guest's IDT could
//! take them without an exit? Because two of them can keep a CPU busy
//! forever *inside* one event delivery (CVE-2015-5307, CVE-2015-8104):
//! - #AC: a 32-bit guest whose #AC gate leads to a ring-3 handler, raising
//!   #AC in ring 3 on a misaligned stack: delivering the #AC pushes onto
//!   that stack, which raises #AC again, which is delivered again...
//! - #DB: a data breakpoint on the stack the #DB handler's IST entry
//!   names: the delivery's own pushes hit it, and the next #DB is due
//!   before the handler's first instruction, on the same stack...
//!
//! Both loops are in microcode: there is no instruction boundary, so no
//! interrupt, NMI or VMX-preemption-timer exit ever comes; the CPU is lost
//! to the host. With #AC and #DB in the exception bitmap each delivery is
//! a VM exit instead, and rvmx injects the exception again (KVM does the
//! same: vmx.c, handle_exception_nmi): the guest sees what bare metal
//! would show it, and the host gets its instruction boundary at each turn.
//! An #AC raised while delivering another event (the first loop, the
//! second time round) is reported as KVM reports it:
//! KVM_EXIT_INTERNAL_ERROR with suberror KVM_INTERNAL_ERROR_SIMUL_EX.
//!
//! #MC is intercepted because it is the host's (exits/interrupt.rs).

use super::exception_rules::{self, DR6_BS, DR7_GD, RFLAGS_AC, RFLAGS_TF};
use super::{Action, ExitCtx};
use crate::guest::DebugRegs;
use crate::kglue::rvmx_glue_split_lock_detect;
use crate::uapi;
use crate::vmcs::intr::{kind, vector, IntrInfo};
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;

/// The vectors rvmx sets in the exception bitmap.
pub(crate) const INTERCEPTED: u32 = 1 << vector::DB | 1 << vector::AC | 1 << vector::MC;

/// CR0.AM: alignment checks enabled (with RFLAGS.AC, in ring 3).
const CR0_AM: u64 = 1 << 18;
/// Guest interruptibility: blocking by STI, by MOV SS.
const BLOCKING_STI_MOVSS: u32 = 0b11;

/// Reason 0 (the dispatch table's entry). NMIs and machine checks were
/// handled right after the exit (exits/interrupt.rs).
pub(crate) fn exception_or_nmi(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let info = ctx.vmcs.read(EXIT_INTR_INFO);
    if info.is(kind::NMI) || super::interrupt::is_machine_check(info) {
        return Ok(Action::Resume);
    }
    let code = if info.has_error_code() { ctx.vmcs.read(EXIT_INTR_ERROR_CODE) } else { 0 };
    // An exception while the CPU delivered another event: the guest's IDT,
    // stack or handler is broken in a way rvmx cannot untangle (for #AC,
    // the endless loop above). KVM's answer, word for word.
    let idt = ctx.vmcs.read(IDT_VECTORING_INFO);
    if idt.valid() {
        ctx.run.exit_internal_error(
            uapi::KVM_INTERNAL_ERROR_SIMUL_EX,
            &[u64::from(idt.0), u64::from(info.0), u64::from(code), u64::from(super::raw_cpu())],
        );
        return Ok(Action::ToUser);
    }
    match info.vector() {
        vector::DB => debug_exception(ctx, info),
        vector::AC => alignment_check(ctx, code),
        _ => Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, super::reason::EXCEPTION_OR_NMI)),
    }
}

/// A #DB in the guest: injected again, with DR6 updated from the exit
/// qualification as the CPU would have updated it. ICEBP (INT1, the one
/// #DB of type "privileged software exception") exits on the instruction
/// itself, so RIP moves past it first.
fn debug_exception(ctx: &mut ExitCtx<'_, '_>, info: IntrInfo) -> Result<Action> {
    let payload = ctx.vmcs.read(EXIT_QUALIFICATION).0;
    if info.kind() == kind::PRIVILEGED_SOFTWARE_EXCEPTION {
        ctx.advance_rip()?;
    }
    queue_debug_exception(ctx.vmcs, &mut ctx.guest.debug, payload)?;
    Ok(Action::Resume)
}

/// Queues #DB for the next VM entry, doing to DR6 and DR7 what the CPU
/// does when it delivers one (exception_rules.rs): VM entry's injection
/// does neither.
pub(crate) fn queue_debug_exception(v: &mut Loaded<'_>, debug: &mut DebugRegs, payload: u64) -> Result {
    debug.dr6 = exception_rules::dr6_after_debug_exception(debug.dr6, payload);
    if debug.dr7 & DR7_GD != 0 {
        debug.dr7 &= !DR7_GD;
        v.write(GUEST_DR7, Natural(debug.dr7))?;
    }
    pending_single_step_for_injection(v)?;
    v.write(ENTRY_INTR_INFO, IntrInfo::event(kind::HARDWARE_EXCEPTION, vector::DB, false))
}

/// Before a #DB is injected: in an STI or MOV SS shadow with RFLAGS.TF
/// set, VM entry requires a pending single step (SDM Vol. 3C §27.3.1.5),
/// which a #DB exit, unlike other exits, does not leave behind; without
/// it the entry would fail. As KVM's vmx_inject_exception.
pub(crate) fn pending_single_step_for_injection(v: &mut Loaded<'_>) -> Result {
    if v.read(GUEST_RFLAGS).0 & RFLAGS_TF != 0 && v.read(GUEST_INTERRUPTIBILITY) & BLOCKING_STI_MOVSS != 0 {
        let p = v.read(GUEST_PENDING_DBG_EXCEPTIONS).0;
        v.write(GUEST_PENDING_DBG_EXCEPTIONS, Natural(p | DR6_BS))?;
    }
    Ok(())
}

/// After rvmx moved RIP past an instruction it emulated: with RFLAGS.TF
/// set, the CPU would now raise the single-step #DB (DR6.BS), so rvmx
/// does, as KVM's kvm_skip_emulated_instruction. TF as it was before the
/// instruction counts, and none of the instructions rvmx emulates changes
/// it.
pub(crate) fn single_step_after_emulation(v: &mut Loaded<'_>, debug: &mut DebugRegs) -> Result {
    if v.read(GUEST_RFLAGS).0 & RFLAGS_TF == 0 {
        return Ok(());
    }
    queue_debug_exception(v, debug, DR6_BS)
}

/// A #AC in the guest. The guest's own alignment check (CR0.AM and
/// RFLAGS.AC in ring 3) goes back to the guest. On a host with split-lock
/// detection an #AC can also be the host's: a locked access across two
/// cache lines, which the host traps to protect the other CPUs. That is
/// handed to the kernel's handle_guest_split_lock (a warning, a delay, or
/// SIGBUS, as the host is configured), outside the guest section since it
/// may sleep (vcpu/run.rs); as in KVM's handle_exception_nmi.
fn alignment_check(ctx: &mut ExitCtx<'_, '_>, code: u32) -> Result<Action> {
    // SAFETY: reads a boot-time CPU feature flag.
    let split_lock_detect = unsafe { rvmx_glue_split_lock_detect() };
    let guest_ac = ctx.vmcs.guest_cpl() == 3
        && ctx.vmcs.read(GUEST_CR0).0 & CR0_AM != 0
        && ctx.vmcs.read(GUEST_RFLAGS).0 & RFLAGS_AC != 0;
    if !split_lock_detect || guest_ac {
        return ctx.inject_exception(vector::AC, Some(code));
    }
    Ok(Action::SplitLock { rip: ctx.vmcs.read(GUEST_RIP).0, code })
}
