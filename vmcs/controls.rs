// SPDX-License-Identifier: GPL-2.0

//! The bits of the VM-execution, VM-exit and VM-entry controls (SDM Vol.
//! 3C §25.6-25.8), defined once for the whole tree: the module sets them
//! (vcpu/setup.rs, reconciled with what the CPU allows by
//! `ControlCaps::adjust` in caps.rs), caps.rs asks the capability MSRs for
//! them, and the entry checker (vmcs/checks.rs) tests them.
//!
//! Kernel-independent: only constants, so the crates that compile
//! vmcs/checks.rs (tests/unit, rvmx-run, the selftests) include it beside.

/// Pin-based VM-execution controls.
pub(crate) mod pin {
    /// External interrupts cause VM exits (the host keeps its interrupts).
    pub(crate) const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMIs cause VM exits (rvmx hands them to the host's NMI handler).
    pub(crate) const NMI_EXITING: u32 = 1 << 3;
    /// The CPU tracks the guest's NMI blocking ("virtual-NMI blocking",
    /// from an injected NMI to its IRET), which NMI-window exits need.
    pub(crate) const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer: the guest exits (reason 52) when the
    /// count loaded at entry reaches zero (vcpu/setup.rs says why rvmx uses it).
    pub(crate) const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls.
pub(crate) mod proc {
    /// Exit as soon as the guest can take an interrupt (vcpu/events.rs).
    pub(crate) const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// RDTSC and the TSC MSR read the host's TSC plus the VMCS TSC offset.
    pub(crate) const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub(crate) const HLT_EXITING: u32 = 1 << 7;
    pub(crate) const MWAIT_EXITING: u32 = 1 << 10;
    pub(crate) const RDPMC_EXITING: u32 = 1 << 11;
    /// CR8 (the TPR) would otherwise reach the host's local APIC.
    pub(crate) const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// Exit as soon as the guest can take an NMI (vcpu/events.rs).
    pub(crate) const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub(crate) const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Debug registers are not switched by VMX: the guest must not reach
    /// the host's.
    pub(crate) const MOV_DR_EXITING: u32 = 1 << 23;
    pub(crate) const MONITOR_EXITING: u32 = 1 << 29;
    pub(crate) const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// RDMSR/WRMSR exit only for MSRs whose bit is set in the MSR bitmap.
    pub(crate) const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub(crate) const ACTIVATE_SECONDARY: u32 = 1 << 31;
    /// Controls rvmx turns off whenever the CPU lets it (they default to 1
    /// on some CPUs; with EPT none of these are needed).
    pub(crate) const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub(crate) const CR3_STORE_EXITING: u32 = 1 << 16;
}

/// Secondary processor-based VM-execution controls.
pub(crate) mod proc2 {
    pub(crate) const ENABLE_EPT: u32 = 1 << 1;
    pub(crate) const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Tag the guest's TLB entries with the vCPU's VPID (vpid.rs).
    pub(crate) const ENABLE_VPID: u32 = 1 << 5;
    pub(crate) const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// WBINVD and WBNOINVD exit (reason 54) instead of flushing the host's
    /// caches (exits/wbinvd.rs).
    pub(crate) const WBINVD_EXITING: u32 = 1 << 6;
    /// Page-modification logging (rvmx does not use it; caps.rs reports it).
    pub(crate) const ENABLE_PML: u32 = 1 << 17;
}

/// VM-exit controls.
pub(crate) mod exit {
    /// VM exit saves DR7 and IA32_DEBUGCTL into the guest fields, so that
    /// the next entry loads them as the guest left them.
    pub(crate) const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after a VM exit.
    pub(crate) const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub(crate) const SAVE_IA32_PAT: u32 = 1 << 18;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 19;
    pub(crate) const SAVE_IA32_EFER: u32 = 1 << 20;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub(crate) mod entry {
    /// The guest is in IA-32e (long) mode after VM entry: must equal the
    /// guest's EFER.LMA.
    pub(crate) const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Entry to system-management mode (only for the dual-monitor treatment
    /// of SMM, which rvmx never uses: must be 0).
    pub(crate) const ENTRY_TO_SMM: u32 = 1 << 10;
    /// VM entry loads DR7 and IA32_DEBUGCTL from the guest fields, so the
    /// guest never runs with the host's breakpoints armed.
    pub(crate) const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 14;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 15;
}
