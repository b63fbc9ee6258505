// SPDX-License-Identifier: GPL-2.0

//! Interrupts and NMIs, the host's and the guest's.
//!
//! The host's: an external interrupt or an NMI that arrives while the guest
//! runs makes the CPU exit (pin-based "external-interrupt exiting" and "NMI
//! exiting" are on), so the host keeps its interrupts.
//!
//! The guest's: there is no interrupt controller in the kernel. Userspace
//! queues an interrupt with KVM_INTERRUPT; vcpu/events.rs injects it at a
//! VM entry when the guest can take it, or asks the CPU for an
//! *interrupt-window exit* (reason 7) for the moment it can. The same exit
//! tells a VMM that set kvm_run.request_interrupt_window that it may inject
//! now. NMIs from KVM_NMI go the same way, with *NMI-window exits*
//! (reason 8) for when the guest's NMI handler has returned.
//!
//! And the guest's triple fault, which on bare metal would reset the
//! machine.

use super::{Action, ExitCtx};
use crate::hw;
use crate::uapi;
use crate::vcpu;
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;

const TYPE_NMI: u32 = 2;

fn is_nmi(info: u32) -> bool {
    info & super::INTR_INFO_VALID != 0 && (info >> 8) & 7 == TYPE_NMI
}

/// Reason 1. Nothing to do here: the interrupt is still pending in the
/// host's local APIC (rvmx does not "acknowledge interrupt on exit"), and
/// the run loop enables interrupts right after the exit, when the host
/// takes it through its own IDT. Then the guest resumes (or the run loop
/// returns, if the interrupt left a signal or a reschedule behind).
pub(crate) fn external_interrupt(_ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(Action::Resume)
}

/// Reason 0, called by the run loop right after the exit with interrupts
/// still off: rvmx intercepts no guest exceptions (the exception bitmap is
/// 0), so this is an NMI meant for the host. The VM exit consumed it, so
/// rvmx runs the host's NMI handler now (hw.rs explains why it cannot just
/// re-send it), before anything else, as the NMI itself would have run.
pub(crate) fn handle_nmi_irqoff(v: &Loaded<'_>) {
    if is_nmi(v.read(EXIT_INTR_INFO)) {
        hw::invoke_nmi_handler();
    }
}

/// Reason 0, in the dispatch table: an NMI is already handled (above).
pub(crate) fn exception_or_nmi(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    if is_nmi(ctx.vmcs.read(EXIT_INTR_INFO)) {
        return Ok(Action::Resume);
    }
    Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, super::reason::EXCEPTION_OR_NMI))
}

/// Reason 7: the guest can take an interrupt now. The window exit is
/// turned off (vcpu/events.rs turns it on again while still needed); a queued
/// interrupt is injected at the coming entry, and a VMM that asked for the
/// window and has nothing queued hears KVM_EXIT_IRQ_WINDOW_OPEN.
pub(crate) fn interrupt_window(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    vcpu::set_irq_window_exiting(ctx.vmcs, ctx.guest, false)?;
    if ctx.guest.irq.is_none() && ctx.guest.want_irq_window {
        return Ok(ctx.exit_to_user(uapi::KVM_EXIT_IRQ_WINDOW_OPEN));
    }
    Ok(Action::Resume)
}

/// Reason 8: the guest's NMI blocking ended (it executed IRET from its NMI
/// handler): the NMI-window exit is turned off, and the pending NMI is
/// injected at the coming entry (vcpu/events.rs).
pub(crate) fn nmi_window(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    vcpu::set_nmi_window_exiting(ctx.vmcs, ctx.guest, false)?;
    Ok(Action::Resume)
}

/// Reason 2: the guest took an exception while delivering a double fault.
/// KVM reports this as KVM_EXIT_SHUTDOWN; the VMM decides (reset or stop).
pub(crate) fn triple_fault(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(ctx.exit_to_user(uapi::KVM_EXIT_SHUTDOWN))
}
