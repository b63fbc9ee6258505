// SPDX-License-Identifier: GPL-2.0

//! Hardware access: the only place in rvmx that executes CPUID, RDMSR, VMX
//! instructions or touches control registers. Everything above this module
//! is safe Rust working with the typed values these wrappers return.
//!
//! Control registers are changed through the kernel's CR4 shadow (see
//! `kglue.c`), never with a raw `mov cr4`: Linux caches CR4 per CPU and would
//! otherwise overwrite rvmx's VMXE bit, and other hypervisors (kvm_intel)
//! read the shadow to learn that VMX is taken.

pub(crate) mod msr;
pub(crate) mod vmx;

use core::arch::asm;

/// Architectural bit positions of CR0 and CR4 that rvmx names.
pub(crate) mod cr {
    pub(crate) const CR4_VMXE: u64 = 1 << 13;
}

/// CPUID.1:ECX bit 5: the CPU implements VMX. (CPUID exists on every
/// x86-64 CPU and only writes registers; `core` wraps it safely.)
pub(crate) fn cpu_has_vmx() -> bool {
    core::arch::x86_64::__cpuid_count(1, 0).ecx & (1 << 5) != 0
}

/// Reads CR0.
pub(crate) fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

extern "C" {
    fn rvmx_glue_cr4_read_shadow() -> core::ffi::c_ulong;
    fn rvmx_glue_cr4_read_raw() -> core::ffi::c_ulong;
    fn rvmx_glue_cr4_set_vmxe();
    fn rvmx_glue_cr4_clear_vmxe();
}

/// CR4 as the kernel believes it is on this CPU (its per-CPU shadow).
pub(crate) fn cr4_shadow() -> u64 {
    // SAFETY: `cr4_read_shadow()` reads this CPU's shadow; no preconditions.
    unsafe { rvmx_glue_cr4_read_shadow() as u64 }
}

/// CR4 as the hardware has it right now (for NMI context, where the shadow
/// may be mid-update).
pub(crate) fn cr4_raw() -> u64 {
    // SAFETY: `__read_cr4()` reads the register; no side effects.
    unsafe { rvmx_glue_cr4_read_raw() as u64 }
}

/// Sets CR4.VMXE on this CPU through the kernel's CR4 accessor.
pub(crate) fn cr4_set_vmxe() {
    // SAFETY: `cr4_set_bits()` updates CR4 and its shadow with interrupts
    // off; setting VMXE alone changes nothing else the kernel relies on.
    unsafe { rvmx_glue_cr4_set_vmxe() }
}

/// Clears CR4.VMXE on this CPU through the kernel's CR4 accessor. Only legal
/// outside VMX operation (after VMXOFF), which the callers guarantee.
pub(crate) fn cr4_clear_vmxe() {
    // SAFETY: as `cr4_set_vmxe`; clearing VMXE while in VMX operation would
    // #GP, and every caller has left VMX operation first (vmxon.rs).
    unsafe { rvmx_glue_cr4_clear_vmxe() }
}
