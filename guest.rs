// SPDX-License-Identifier: GPL-2.0

//! The guest's state outside the VMCS (vmcs/guest.rs has the state inside
//! it): the general registers' order, and what the exit handlers and the
//! vCPU's ioctls keep in software: MSRs, CR8, XCR0, the CPUID table, the
//! events queued for injection, the debug registers. A vCPU owns one
//! `Guest` (vcpu/mod.rs) and lends it to the exit handlers (exits/).

use crate::exits::exception_rules::{DR6_ACTIVE_LOW, DR6_VOLATILE};
use crate::msrs::GuestMsrs;
use crate::uapi::kvm_cpuid_entry2;
use kernel::prelude::*;

/// Indices into `regs`, in KVM's (and vmenter.S's) order.
pub(crate) mod reg {
    pub(crate) const RAX: usize = 0;
    pub(crate) const RCX: usize = 1;
    pub(crate) const RDX: usize = 2;
    pub(crate) const RBX: usize = 3;
    pub(crate) const RSP: usize = 4;
    pub(crate) const RSI: usize = 6;
    pub(crate) const RDI: usize = 7;
}

/// The guest state that neither the VMCS nor `regs` holds, which exit
/// handlers and ioctls use.
pub(crate) struct Guest {
    pub(crate) msrs: GuestMsrs,
    /// CR8, the task priority: kept, not acted on (no local APIC).
    pub(crate) cr8: u64,
    /// The guest's XCR0 (set by XSETBV, exits/xsetbv.rs); loaded into the
    /// CPU while the guest runs.
    pub(crate) xcr0: u64,
    /// The table of KVM_SET_CPUID2; empty until then (exits/cpuid.rs).
    pub(crate) cpuid: KVec<kvm_cpuid_entry2>,
    /// An interrupt vector queued by KVM_INTERRUPT, not yet injected.
    pub(crate) irq: Option<u8>,
    /// kvm_run.request_interrupt_window, read at KVM_RUN.
    pub(crate) want_irq_window: bool,
    /// Whether "interrupt-window exiting" is on in the VMCS.
    pub(crate) irq_window_exiting: bool,
    /// NMIs queued by KVM_NMI, not yet injected (at most 2).
    pub(crate) nmi_pending: u8,
    /// Whether "NMI-window exiting" is on in the VMCS.
    pub(crate) nmi_window_exiting: bool,
    /// The vCPU's VPID, or 0 if it has none (vpid.rs).
    pub(crate) vpid: u16,
    /// The guest's DR0-3, DR6 and DR7, as MOV DR sees them (exits/dr.rs).
    pub(crate) debug: DebugRegs,
    /// The host's XCR0 (read at creation, in the host's context), put back
    /// when a guest section ends.
    pub(crate) host_xcr0: u64,
    /// The state components the guest's XSAVE image holds, and the most a
    /// guest may enable in XCR0: the host's, less PKRU. VMX does not switch
    /// PKRU, and Linux does not restore it on the way back to user mode, so
    /// a guest value loaded by XRSTOR would become the VMM's protection
    /// keys (rvmx gives guests no protection keys: CR4.PKE is refused).
    pub(crate) xfeatures: u64,
}

/// DR6 after RESET: every low bit that can read as 1 does (0xffff0ff0).
/// With no RTM and no bus-lock detection for the guest, its RTM and BLD
/// bits are fixed to 1 as well (KVM's kvm_dr6_fixed).
const DR6_RESET: u64 = DR6_ACTIVE_LOW;
/// DR7 bit 10 reads as 1.
pub(crate) const DR7_FIXED_1: u64 = 0x400;

/// The guest's debug registers.
#[derive(Clone, Copy)]
pub(crate) struct DebugRegs {
    pub(crate) dr: [u64; 4],
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
}

impl DebugRegs {
    /// Their values after RESET (SDM Vol. 3A, table 10-1).
    pub(crate) const RESET: Self = DebugRegs { dr: [0; 4], dr6: DR6_RESET, dr7: DR7_FIXED_1 };

    /// Whether DR7 enables a breakpoint (L0-L3, G0-G3): the guest's DR0-3
    /// must then be in the CPU while it runs.
    pub(crate) fn armed(&self) -> bool {
        self.dr7 & 0xff != 0
    }

    /// Takes DR6 as the CPU left it after the guest ran with the guest's
    /// DR6 loaded. A #DB that exits leaves DR6 alone, so this is the
    /// value loaded unless the CPU recorded something without an exit.
    pub(crate) fn set_dr6_from_cpu(&mut self, v: u64) {
        self.dr6 = (v & DR6_VOLATILE) | DR6_ACTIVE_LOW;
    }
}
