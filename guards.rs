// SPDX-License-Identifier: GPL-2.0

//! Being a good neighbour to the rest of the kernel while rvmx holds VMX:
//! never share VMX with KVM (rvmx does not load while kvm.ko is loaded, and
//! kvm.ko/kvm_intel do not load while rvmx is), and leave VMX when the
//! machine reboots, kexecs or crashes. The notifiers themselves are in kglue/cpu.c; what they do
//! on each CPU is in vmxon.rs.

use crate::kglue::{rvmx_glue_guards_register, rvmx_glue_guards_unregister, rvmx_glue_kvm_loaded};
use kernel::prelude::*;

/// Registered reboot notifier, emergency-virtualization callback, and a
/// module notifier that refuses kvm and kvm_intel while rvmx is loaded.
pub(crate) struct Guards(());

impl Guards {
    pub(crate) fn register() -> Result<Self> {
        // kvm.ko loaded means kvm_intel is (or may soon be) using VMX, and
        // holds the kernel's one emergency-virtualization slot whenever it
        // has VMX enabled. Two hypervisors cannot share VMX root operation.
        // SAFETY: looks up and releases a symbol; no other effect.
        if unsafe { rvmx_glue_kvm_loaded() } {
            pr_err!("VMX is in use by another hypervisor: kvm is loaded (rmmod kvm_intel kvm first)\n");
            return Err(EBUSY);
        }
        // SAFETY: registers kglue/cpu.c's static notifier blocks, whose callbacks
        // are safe to run before VMX is enabled (they find no state).
        kernel::error::to_result(unsafe { rvmx_glue_guards_register() })?;
        Ok(Self(()))
    }
}

impl Drop for Guards {
    fn drop(&mut self) {
        // SAFETY: `self` exists only after a successful registration.
        unsafe { rvmx_glue_guards_unregister() };
    }
}
