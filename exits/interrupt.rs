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
use crate::kglue::rvmx_glue_machine_check;
use crate::hw;
use crate::uapi;
use crate::vmcs::guest;
use crate::vmcs::intr::{kind, vector, IntrInfo};
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;

fn is_nmi(info: IntrInfo) -> bool {
    info.is(kind::NMI)
}

/// Reason 1. Nothing to do here: the interrupt is still pending in the
/// host's local APIC (rvmx does not "acknowledge interrupt on exit"), and
/// the run loop enables interrupts right after the exit, when the host
/// takes it through its own IDT. Then the guest resumes (or the run loop
/// returns, if the interrupt left a signal or a reschedule behind).
pub(crate) fn external_interrupt(_ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(Action::Resume)
}

/// Reason 52: the VMX-preemption timer ran out (vcpu/setup.rs says why it
/// is armed). Nothing to do: like an external interrupt, the exit only
/// gives the run loop a chance to see a signal or a reschedule request
/// before it enters the guest again.
pub(crate) fn preemption_timer(_ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(Action::Resume)
}

/// Called by the run loop right after every exit, with interrupts still
/// off, for the events that belong to the host and were consumed by the
/// exit; anything else costs one comparison.
/// - Reason 0 with an NMI: the VM exit consumed it, so rvmx runs the host's
///   NMI handler now (hw.rs explains why it cannot just re-send it), before
///   anything else, as the NMI itself would have run.
/// - Reason 0 with #MC (bit 18 of the exception bitmap; the other
///   exceptions rvmx intercepts are the guest's: exits/exception.rs), or reason 41 (a machine check during VM entry): a
///   hardware error the host's #MC handler must see, as KVM's
///   kvm_machine_check.
pub(crate) fn handle_host_events_irqoff(v: &Loaded<'_>, reason: u32) {
    if reason == super::reason::EXCEPTION_OR_NMI {
        let info = v.read(EXIT_INTR_INFO);
        if is_nmi(info) {
            hw::invoke_nmi_handler();
        } else if is_machine_check(info) {
            // SAFETY: runs the kernel's #MC handler with interrupts off, as
            // the machine check itself would have.
            unsafe { rvmx_glue_machine_check() };
        }
    } else if reason & 0xffff == super::reason::MCE_DURING_ENTRY {
        // SAFETY: as above.
        unsafe { rvmx_glue_machine_check() };
    }
}

pub(crate) fn is_machine_check(info: IntrInfo) -> bool {
    info.is(kind::HARDWARE_EXCEPTION) && info.vector() == vector::MC
}

/// Reason 7: the guest can take an interrupt now. The window exit is
/// turned off (vcpu/events.rs turns it on again while still needed); a queued
/// interrupt is injected at the coming entry, and a VMM that asked for the
/// window and has nothing queued hears KVM_EXIT_IRQ_WINDOW_OPEN.
pub(crate) fn interrupt_window(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    guest::set_irq_window_exiting(ctx.vmcs, &mut ctx.guest.irq_window_exiting, false)?;
    if ctx.guest.irq.is_none() && ctx.guest.want_irq_window {
        return Ok(ctx.exit_to_user(uapi::KVM_EXIT_IRQ_WINDOW_OPEN));
    }
    Ok(Action::Resume)
}

/// Reason 8: the guest's NMI blocking ended (it executed IRET from its NMI
/// handler): the NMI-window exit is turned off, and the pending NMI is
/// injected at the coming entry (vcpu/events.rs).
pub(crate) fn nmi_window(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    guest::set_nmi_window_exiting(ctx.vmcs, &mut ctx.guest.nmi_window_exiting, false)?;
    Ok(Action::Resume)
}

/// Reason 2: the guest took an exception while delivering a double fault.
/// KVM reports this as KVM_EXIT_SHUTDOWN; the VMM decides (reset or stop).
pub(crate) fn triple_fault(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    Ok(ctx.exit_to_user(uapi::KVM_EXIT_SHUTDOWN))
}
