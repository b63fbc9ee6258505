// SPDX-License-Identifier: GPL-2.0

//! Exits that are about the host, not the guest: an external interrupt or
//! an NMI arrived while the guest ran (pin-based "external-interrupt
//! exiting" and "NMI exiting" are on, so the host keeps its interrupts), and
//! the guest's triple fault (which on bare metal would reset the machine).

use super::{Action, ExitCtx};
use crate::hw;
use crate::uapi;
use crate::vmcs::fields::*;
use kernel::prelude::*;

/// Reason 1. Nothing to do here: the interrupt is still pending in the
/// host's local APIC (rvmx does not "acknowledge interrupt on exit"), and
/// the run loop enables interrupts right after the exit, when the host
/// takes it through its own IDT. Then the guest resumes (or the run loop
/// returns, if the interrupt left a signal or a reschedule behind).
pub(crate) fn external_interrupt(_ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(Action::Resume)
}

/// Reason 0. rvmx intercepts no guest exceptions (the exception bitmap is
/// 0), so this is an NMI meant for the host: the VM exit consumed it, so
/// rvmx runs the host's NMI handler now (hw.rs explains why it cannot just
/// re-send it), as the kernel's perf and watchdog code expect.
pub(crate) fn exception_or_nmi(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let info = ctx.vmcs.read(EXIT_INTR_INFO);
    const TYPE_NMI: u32 = 2;
    if info & (1 << 31) != 0 && (info >> 8) & 7 == TYPE_NMI {
        hw::invoke_nmi_handler();
        return Ok(Action::Resume);
    }
    Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, super::reason::EXCEPTION_OR_NMI))
}

/// Reason 2: the guest took an exception while delivering a double fault.
/// KVM reports this as KVM_EXIT_SHUTDOWN; the VMM decides (reset or stop).
pub(crate) fn triple_fault(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(ctx.exit_to_user(uapi::KVM_EXIT_SHUTDOWN))
}
