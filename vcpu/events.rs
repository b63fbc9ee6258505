// SPDX-License-Identifier: GPL-2.0

//! Events into the guest: the interrupt KVM_INTERRUPT queues and the
//! interrupt-window protocol that delivers it, the NMIs KVM_NMI queues (and
//! NMI windows), the guest's interrupt shadow, and KVM_GET/SET_VCPU_EVENTS. The exits involved are in
//! exits/interrupt.rs; the run loop calls `update_interrupt_window` right
//! before each VM entry that has something to deliver.

use super::{Guest, Vcpu, RFLAGS_IF};
use crate::exits;
use crate::uapi;
use crate::vmcs::intr::{kind, IntrInfo};
use crate::vmcs::guest::*;
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;


/// How many NMIs may wait (KVM's limit: one being handled, one latched).
const MAX_PENDING_NMIS: u8 = 2;

/// VMX's interrupt-shadow bits in KVM's encoding (KVM_X86_SHADOW_INT_*:
/// MOV SS is 1, STI is 2; VMX has them the other way round).
fn shadow_to_kvm(s: u32) -> u8 {
    let mut k = 0;
    if s & BLOCKING_MOVSS != 0 {
        k |= uapi::KVM_X86_SHADOW_INT_MOV_SS as u8;
    }
    if s & BLOCKING_STI != 0 {
        k |= uapi::KVM_X86_SHADOW_INT_STI as u8;
    }
    k
}

/// KVM's encoding back to VMX's. Both bits at once is a state no CPU is in
/// (VM entry fails with "invalid guest state" if both are set, SDM Vol. 3C
/// §27.3.1.5): MOV SS wins, as in KVM's vmx_set_interrupt_shadow.
fn shadow_from_kvm(k: u8) -> u32 {
    if u32::from(k) & uapi::KVM_X86_SHADOW_INT_MOV_SS != 0 {
        BLOCKING_MOVSS
    } else if u32::from(k) & uapi::KVM_X86_SHADOW_INT_STI != 0 {
        BLOCKING_STI
    } else {
        0
    }
}

/// Whether the guest can take an external interrupt at the next VM entry:
/// RFLAGS.IF set, no STI or MOV SS shadow, and no other event being
/// injected (SDM Vol. 3C §27.6 and the entry checks of §27.3.1.5).
pub(super) fn interruptible(v: &Loaded<'_>) -> bool {
    v.read(GUEST_RFLAGS).0 & RFLAGS_IF != 0
        && v.read(GUEST_INTERRUPTIBILITY) & BLOCKING_STI_MOVSS == 0
        && !v.read(ENTRY_INTR_INFO).valid()
}

/// Injects the interrupt KVM_INTERRUPT queued if the guest can take it now;
/// otherwise, or if the VMM asked for an interrupt window, turns on
/// "interrupt-window exiting", so that the CPU exits as soon as the guest
/// can take one (exits/interrupt.rs). This is the interrupt-window protocol
/// of a userspace interrupt controller (api.rst, KVM_INTERRUPT and
/// kvm_run.request_interrupt_window).
pub(super) fn update_interrupt_window(v: &mut Loaded<'_>, g: &mut Guest, stats: &crate::stats::VcpuStats) -> Result {
    let mut window = g.want_irq_window;
    if let Some(vector) = g.irq {
        if interruptible(v) {
            // Type 0, external interrupt.
            v.write(ENTRY_INTR_INFO, IntrInfo::event(kind::EXTERNAL_INTERRUPT, vector, false))?;
            g.irq = None;
            stats.irq_injections.add(1);
        } else {
            window = true;
        }
    }
    set_irq_window_exiting(v, &mut g.irq_window_exiting, window)
}

/// Whether the guest can take an NMI at the next VM entry: no NMI
/// blocking (an NMI handler that has not returned yet), no MOV SS or STI
/// shadow, and no other event being injected. An STI shadow blocks NMIs
/// on some processors (SDM Vol. 3C, table 25-3), so, like KVM
/// (vmx_nmi_blocked), rvmx does not inject one there.
fn nmi_allowed(v: &Loaded<'_>) -> bool {
    v.read(GUEST_INTERRUPTIBILITY) & (BLOCKING_STI_MOVSS | BLOCKING_NMI) == 0
        && !v.read(ENTRY_INTR_INFO).valid()
}

/// Injects a pending NMI (from KVM_NMI) if the guest can take it now, and
/// otherwise asks the CPU to exit when it can: "NMI-window exiting" waits
/// for the guest's NMI handler to return, but need not wait for the end of
/// an STI shadow, so in a shadow the interrupt window is used instead (RFLAGS.IF
/// is 1 right after STI), as KVM's vmx_enable_nmi_window does. The exit
/// handlers (exits/interrupt.rs) turn the windows off; the next entry comes
/// back here. Needs the "virtual NMIs" control: without it KVM_NMI is
/// refused.
pub(super) fn update_nmi_window(v: &mut Loaded<'_>, g: &mut Guest, stats: &crate::stats::VcpuStats) -> Result {
    if g.nmi_pending > 0 && nmi_allowed(v) {
        // Vector 2, type 2 (NMI). The CPU sets virtual-NMI blocking.
        v.write(ENTRY_INTR_INFO, IntrInfo::event(kind::NMI, 2, false))?;
        g.nmi_pending -= 1;
        stats.nmi_injections.add(1);
    }
    if g.nmi_pending > 0 && v.read(GUEST_INTERRUPTIBILITY) & BLOCKING_STI != 0 {
        set_nmi_window_exiting(v, &mut g.nmi_window_exiting, false)?;
        return set_irq_window_exiting(v, &mut g.irq_window_exiting, true);
    }
    set_nmi_window_exiting(v, &mut g.nmi_window_exiting, g.nmi_pending > 0)
}

impl Vcpu {
    /// KVM_NMI: queues an NMI for the guest. As on hardware (and in KVM),
    /// at most two wait: more are merged. EOPNOTSUPP on a CPU without the
    /// "virtual NMIs" control (KVM_CAP_USER_NMI says which).
    pub(crate) fn nmi(&self) -> Result {
        if !self.virtual_nmis {
            return Err(crate::caps::eopnotsupp());
        }
        let mut t = self.token()?;
        let g = &mut t.state().guest;
        g.nmi_pending = (g.nmi_pending + 1).min(MAX_PENDING_NMIS);
        Ok(())
    }

    /// KVM_INTERRUPT: queues an external interrupt, injected as soon as the
    /// guest can take it (`update_interrupt_window`). Like KVM without an
    /// in-kernel interrupt controller, a second call before the first was
    /// injected replaces it: userspace is expected to wait for
    /// ready_for_interrupt_injection.
    pub(crate) fn interrupt(&self, vector: u32) -> Result {
        let vector = u8::try_from(vector).map_err(|_| EINVAL)?;
        let mut t = self.token()?;
        t.state().guest.irq = Some(vector);
        Ok(())
    }

    /// KVM_GET_VCPU_EVENTS: the events waiting for the next VM entry (an
    /// exception rvmx injected, the interrupt KVM_INTERRUPT queued), the
    /// guest's interrupt shadow and NMI blocking, in KVM's encoding.
    pub(crate) fn get_events(&self) -> Result<uapi::kvm_vcpu_events> {
        let mut t = self.token()?;
        let st = t.state();
        let (irq, nmis) = (st.guest.irq, st.guest.nmi_pending);
        let v = st.vmcs.load()?;
        let mut e = uapi::kvm_vcpu_events::default();
        let info = v.read(ENTRY_INTR_INFO);
        if info.valid() {
            let nr = info.vector();
            match info.kind() {
                kind::HARDWARE_EXCEPTION => {
                    e.exception.injected = 1;
                    e.exception.nr = nr;
                    e.exception.has_error_code = u8::from(info.has_error_code());
                    e.exception.error_code = v.read(ENTRY_EXCEPTION_ERROR_CODE);
                }
                kind::EXTERNAL_INTERRUPT => {
                    e.interrupt.injected = 1;
                    e.interrupt.nr = nr;
                }
                kind::NMI => e.nmi.injected = 1,
                _ => {}
            }
        }
        if let Some(nr) = irq {
            e.interrupt.injected = 1;
            e.interrupt.nr = nr;
        }
        let shadow = v.read(GUEST_INTERRUPTIBILITY);
        e.interrupt.shadow = shadow_to_kvm(shadow);
        e.nmi.masked = u8::from(shadow & BLOCKING_NMI != 0);
        e.nmi.pending = u8::from(nmis > 0);
        e.flags = uapi::KVM_VCPUEVENT_VALID_NMI_PENDING | uapi::KVM_VCPUEVENT_VALID_SHADOW;
        Ok(e)
    }

    /// KVM_SET_VCPU_EVENTS, with KVM's checks; what rvmx cannot deliver (a
    /// soft interrupt, SMM, a pending triple fault, exception payloads,
    /// NMIs on a CPU without virtual NMIs) is refused with EINVAL rather
    /// than dropped.
    pub(crate) fn set_events(&self, e: &uapi::kvm_vcpu_events) -> Result {
        use uapi::*;
        let known = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW
            | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
        if e.flags & !known != 0 || e.flags & KVM_VCPUEVENT_VALID_PAYLOAD != 0 {
            return Err(EINVAL);
        }
        if e.exception.injected != 0 && (e.exception.nr > 31 || e.exception.nr == 2) {
            return Err(EINVAL);
        }
        let nmis = u8::from(e.nmi.injected != 0) + u8::from(e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 && e.nmi.pending != 0);
        let smm = e.flags & KVM_VCPUEVENT_VALID_SMM != 0 && (e.smi.smm != 0 || e.smi.pending != 0);
        let triple = e.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT != 0 && e.triple_fault.pending != 0;
        if (nmis > 0 && !self.virtual_nmis) || smm || triple || (e.interrupt.injected != 0 && e.interrupt.soft != 0) {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let st = t.state();
        st.guest.irq = (e.interrupt.injected != 0).then_some(e.interrupt.nr);
        // An NMI being injected is put back as pending: it is injected at
        // the next entry where the guest can take it.
        if e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 || e.nmi.injected != 0 {
            st.guest.nmi_pending = nmis;
        }
        let mut v = st.vmcs.load()?;
        let mut info = IntrInfo::NONE;
        if e.exception.injected != 0 {
            let code = (e.exception.has_error_code != 0).then_some(e.exception.error_code);
            let (i, code) = exits::exception_info(e.exception.nr, code, v.read(GUEST_CR0).0);
            info = i;
            if let Some(c) = code {
                v.write(ENTRY_EXCEPTION_ERROR_CODE, c)?;
            }
        }
        v.write(ENTRY_INTR_INFO, info)?;
        let mut shadow = v.read(GUEST_INTERRUPTIBILITY);
        if e.flags & KVM_VCPUEVENT_VALID_SHADOW != 0 {
            shadow = (shadow & !BLOCKING_STI_MOVSS) | shadow_from_kvm(e.interrupt.shadow);
        }
        shadow = if e.nmi.masked != 0 { shadow | BLOCKING_NMI } else { shadow & !BLOCKING_NMI };
        v.write(GUEST_INTERRUPTIBILITY, shadow)?;
        // A #DB injected in a shadow with TF set needs its single step
        // pending, or the entry fails (exits/exception.rs).
        if info.is(kind::HARDWARE_EXCEPTION) && info.vector() == crate::vmcs::intr::vector::DB {
            exits::exception::pending_single_step_for_injection(&mut v)?;
        }
        Ok(())
    }
}
