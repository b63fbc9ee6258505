// SPDX-License-Identifier: GPL-2.0

//! Tracepoints: rvmx:rvmx_entry, rvmx:rvmx_inject, rvmx:rvmx_exit and
//! rvmx:rvmx_userspace_exit (defined in C, kglue/trace.h, where their
//! fields and output format are). Enable them with
//! `echo 1 > /sys/kernel/tracing/events/rvmx/enable` and read
//! /sys/kernel/tracing/trace, or `perf record -e 'rvmx:*'`.
//!
//! Each function here checks its event's on/off count first and reads
//! the VMCS fields the event records only when the event is on, so an
//! event that is off costs the run loop one load and a branch.

use crate::kglue::{
    rvmx_glue_trace_entry, rvmx_glue_trace_exit, rvmx_glue_trace_inject, rvmx_glue_trace_keys,
    rvmx_glue_trace_userspace_exit,
};
use crate::vmcs::fields::*;
use crate::vmcs::Loaded;
use core::sync::atomic::{AtomicI32, Ordering::Relaxed};

/// kglue/kglue.h `enum rvmx_trace_event`.
#[derive(Clone, Copy)]
enum Event {
    Entry = 0,
    Exit = 1,
    UserspaceExit = 2,
    Inject = 3,
}

/// Whether `e` has a probe attached (tracefs, perf, ...).
#[inline(always)]
fn on(e: Event) -> bool {
    // SAFETY: kglue/trace.c's array is constant, and each entry points at
    // a tracepoint's static-key count `key.enabled` (> 0: on), an
    // atomic_t (an i32 the tracepoint core changes atomically, so read
    // atomically here) that lives as long as the module.
    unsafe { (*rvmx_glue_trace_keys[e as usize].cast::<AtomicI32>()).load(Relaxed) > 0 }
}

/// Right before VMLAUNCH (`launch`) or VMRESUME: the entry, and the event
/// it injects if the VM-entry interruption information holds one.
#[inline(always)]
pub(crate) fn entry(v: &Loaded<'_>, vcpu: u32, launch: bool) {
    if on(Event::Entry) {
        // SAFETY: fires the tracepoint; plain values.
        unsafe { rvmx_glue_trace_entry(vcpu, v.read(GUEST_RIP).0, launch) };
    }
    if on(Event::Inject) {
        inject(v, vcpu);
    }
}

#[cold]
fn inject(v: &Loaded<'_>, vcpu: u32) {
    let info = v.read(ENTRY_INTR_INFO);
    if info.valid() {
        let code = if info.has_error_code() { v.read(ENTRY_EXCEPTION_ERROR_CODE) } else { 0 };
        // CAST: the type is 3 bits.
        // SAFETY: fires the tracepoint; plain values.
        unsafe { rvmx_glue_trace_inject(vcpu, info.vector(), info.kind() as u8, info.has_error_code(), code) };
    }
}

/// Right after a VM exit with full exit reason `reason`.
#[inline(always)]
pub(crate) fn exit(v: &Loaded<'_>, vcpu: u32, reason: u32) {
    if on(Event::Exit) {
        exit_fields(v, vcpu, reason);
    }
}

#[cold]
fn exit_fields(v: &Loaded<'_>, vcpu: u32, reason: u32) {
    use crate::vmcs::exit_reason::{EPT_MISCONFIG, EPT_VIOLATION};
    let basic = reason & 0xffff;
    // The guest-physical address is an EPT exit's only (SDM Vol. 3C
    // §28.2.1); 0 for the others.
    let gpa = if basic == EPT_VIOLATION || basic == EPT_MISCONFIG { v.read(GUEST_PHYSICAL_ADDRESS) } else { 0 };
    let (qualification, rip, intr) = (v.read(EXIT_QUALIFICATION).0, v.read(GUEST_RIP).0, v.read(EXIT_INTR_INFO).0);
    // SAFETY: fires the tracepoint; plain values.
    unsafe { rvmx_glue_trace_exit(vcpu, reason, qualification, rip, gpa, intr) };
}

/// KVM_RUN returns to the VMM: kvm_run's `exit_reason` and the errno.
#[inline(always)]
pub(crate) fn userspace_exit(vcpu: u32, reason: u32, err: i32) {
    if on(Event::UserspaceExit) {
        // SAFETY: fires the tracepoint; plain values.
        unsafe { rvmx_glue_trace_userspace_exit(vcpu, reason, err) };
    }
}
