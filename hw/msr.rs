// SPDX-License-Identifier: GPL-2.0

//! Model-specific registers: the indices rvmx reads and a typed RDMSR.

use core::arch::asm;

/// An MSR index. A newtype so that only the architectural indices below,
/// whose existence the caller has checked, reach `rdmsr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Msr(pub(crate) u32);

/// IA32_FEATURE_CONTROL: firmware's lock and the "VMXON outside SMX" enable.
pub(crate) const IA32_FEATURE_CONTROL: Msr = Msr(0x3a);
/// Feature-control bit 0: the MSR is locked until reset.
pub(crate) const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// Feature-control bit 2: VMXON allowed outside SMX operation.
pub(crate) const FEATURE_CONTROL_VMXON_OUTSIDE_SMX: u64 = 1 << 2;

// The VMX capability MSRs (SDM Vol. 3D, Appendix A).
pub(crate) const IA32_VMX_BASIC: Msr = Msr(0x480);
pub(crate) const IA32_VMX_PINBASED_CTLS: Msr = Msr(0x481);
pub(crate) const IA32_VMX_PROCBASED_CTLS: Msr = Msr(0x482);
pub(crate) const IA32_VMX_EXIT_CTLS: Msr = Msr(0x483);
pub(crate) const IA32_VMX_ENTRY_CTLS: Msr = Msr(0x484);
/// Bits 4:0: the VMX-preemption timer counts down once every 2^n TSC ticks.
pub(crate) const IA32_VMX_MISC: Msr = Msr(0x485);
pub(crate) const IA32_VMX_CR0_FIXED0: Msr = Msr(0x486);
pub(crate) const IA32_VMX_CR0_FIXED1: Msr = Msr(0x487);
pub(crate) const IA32_VMX_CR4_FIXED0: Msr = Msr(0x488);
pub(crate) const IA32_VMX_CR4_FIXED1: Msr = Msr(0x489);
pub(crate) const IA32_VMX_PROCBASED_CTLS2: Msr = Msr(0x48b);
pub(crate) const IA32_VMX_EPT_VPID_CAP: Msr = Msr(0x48c);
pub(crate) const IA32_VMX_TRUE_PINBASED_CTLS: Msr = Msr(0x48d);
pub(crate) const IA32_VMX_TRUE_PROCBASED_CTLS: Msr = Msr(0x48e);
pub(crate) const IA32_VMX_TRUE_EXIT_CTLS: Msr = Msr(0x48f);
pub(crate) const IA32_VMX_TRUE_ENTRY_CTLS: Msr = Msr(0x490);

// MSRs that hold host state VMX loads on exit, or does not switch at all.
pub(crate) const IA32_SYSENTER_CS: Msr = Msr(0x174);
pub(crate) const IA32_SYSENTER_ESP: Msr = Msr(0x175);
pub(crate) const IA32_SYSENTER_EIP: Msr = Msr(0x176);
pub(crate) const IA32_PAT: Msr = Msr(0x277);
pub(crate) const IA32_DEBUGCTL: Msr = Msr(0x1d9);
/// Bit 0 written: flush the L1 data cache (L1TF mitigation).
pub(crate) const IA32_FLUSH_CMD: Msr = Msr(0x10b);
pub(crate) const IA32_EFER: Msr = Msr(0xc000_0080);
pub(crate) const IA32_FS_BASE: Msr = Msr(0xc000_0100);
pub(crate) const IA32_GS_BASE: Msr = Msr(0xc000_0101);

/// Reads an MSR on the current CPU.
///
/// # Safety
///
/// The MSR must exist on this CPU (RDMSR of an unimplemented index raises
/// #GP in ring 0). For the VMX capability MSRs that means CPUID.1:ECX.VMX is
/// set and, for the conditional ones, the bit of IA32_VMX_BASIC or of the
/// controls that announces them (see `caps.rs`).
pub(crate) unsafe fn rdmsr(msr: Msr) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR only reads.
    unsafe {
        asm!("rdmsr", in("ecx") msr.0, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR on the current CPU.
///
/// # Safety
///
/// The MSR must exist, the value must pass the CPU's checks (else WRMSR
/// faults), and the kernel must be able to live with it: rvmx writes
/// KERNEL_GS_BASE (msrs/mod.rs: the guest's value while the guest runs, the
/// host's back before anything uses it), IA32_DEBUGCTL (the host's value
/// back after an exit) and IA32_FLUSH_CMD. The MSRs deferred to the return
/// to user mode are written by kglue/run.c, next to its notifier.
pub(crate) unsafe fn wrmsr(msr: Msr, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr.0, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}
