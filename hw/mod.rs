// SPDX-License-Identifier: GPL-2.0

//! Hardware access: the only place in rvmx that executes CPUID, RDMSR, VMX
//! instructions or touches control registers. Everything above this module
//! is safe Rust working with the typed values these wrappers return.
//!
//! Control registers are changed through the kernel's CR4 shadow (see
//! `kglue/cpu.c`), never with a raw `mov cr4`: Linux caches CR4 per CPU and would
//! otherwise overwrite rvmx's VMXE bit, and other hypervisors (kvm_intel)
//! read the shadow to learn that VMX is taken.

pub(crate) mod msr;
pub(crate) mod vmx;

use crate::kglue::{
    rvmx_glue_cr4_clear_vmxe, rvmx_glue_cr4_read_raw, rvmx_glue_cr4_read_shadow,
    rvmx_glue_cr4_set_vmxe, rvmx_glue_l1d_flush_alloc, rvmx_glue_l1d_flush_free,
    rvmx_glue_l1d_flush_sw,
};
use core::arch::asm;

/// Architectural bit positions of CR0 and CR4 that rvmx names.
pub(crate) mod cr;

/// CPUID.1:ECX bit 5: the CPU implements VMX.
pub(crate) fn cpu_has_vmx() -> bool {
    cpuid(1, 0)[2] & (1 << 5) != 0
}

/// Reads CR0.
pub(crate) fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
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

/// Reads CR3 (the current address space's page-table root, with PCID bits).
pub(crate) fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// A descriptor-table register as SGDT/SIDT store it.
#[repr(C, packed)]
#[derive(Default, Clone, Copy)]
pub(crate) struct DescTable {
    pub(crate) limit: u16,
    pub(crate) base: u64,
}

/// SGDT: this CPU's GDTR.
pub(crate) fn sgdt() -> DescTable {
    let mut d = DescTable::default();
    // SAFETY: SGDT writes 10 bytes to `d`, which is 10 bytes long.
    unsafe { asm!("sgdt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// SIDT: this CPU's IDTR.
pub(crate) fn sidt() -> DescTable {
    let mut d = DescTable::default();
    // SAFETY: SIDT writes 10 bytes to `d`, which is 10 bytes long.
    unsafe { asm!("sidt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// STR: this CPU's task-register selector.
pub(crate) fn str_selector() -> u16 {
    let v: u16;
    // SAFETY: STR only reads TR.
    unsafe { asm!("str {:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The base address of this CPU's TSS, read from its 16-byte system
/// descriptor in the GDT (SDM Vol. 3A §8.2.3, 64-bit TSS descriptor).
pub(crate) fn tss_base() -> u64 {
    let gdt = sgdt();
    let sel = u64::from(str_selector() & !7);
    let p = (gdt.base + sel) as *const u32;
    // SAFETY: the GDT is mapped (this CPU runs on it) and TR selects a valid
    // 16-byte TSS descriptor within its limit; reads only.
    let (lo, hi, upper) = unsafe {
        (p.read_unaligned(), p.add(1).read_unaligned(), p.add(2).read_unaligned())
    };
    u64::from(lo >> 16) | (u64::from(hi & 0xff) << 16) | (u64::from(hi >> 24) << 24) | (u64::from(upper) << 32)
}

/// Reads the selectors DS and ES (which a VM exit sets to the host-state
/// values and which rvmx puts back afterwards).
pub(crate) fn read_ds_es() -> (u16, u16) {
    let (ds, es): (u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
    }
    (ds, es)
}

/// Loads DS and ES with selectors read earlier by `read_ds_es` on this
/// thread.
pub(crate) fn load_ds_es(ds: u16, es: u16) {
    // SAFETY: the selectors were valid in this context before the guest ran
    // (they come from `read_ds_es`), so loading them cannot fault.
    unsafe {
        asm!("mov ds, {:x}", in(reg) ds, options(nomem, nostack, preserves_flags));
        asm!("mov es, {:x}", in(reg) es, options(nomem, nostack, preserves_flags));
    }
}

/// XSAVE of the components in `mask` into `area`.
///
/// # Safety
///
/// `area` must be 64-byte aligned and at least as large as CPUID.0xD:EBX
/// says for the current XCR0; the caller must own the FPU registers
/// (between `kernel_fpu_begin()` and `kernel_fpu_end()`).
pub(crate) unsafe fn xsave(area: *mut u8, mask: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// XRSTOR of the components in `mask` from `area`.
///
/// # Safety
///
/// As `xsave`, and `area` must hold a valid XSAVE image (an all-zero one is:
/// it restores the initial state).
pub(crate) unsafe fn xrstor(area: *const u8, mask: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack, preserves_flags, readonly));
    }
}

/// XGETBV(0): the XCR0 the host runs with.
pub(crate) fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 reads XCR0; the kernel enables OSXSAVE.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// XSETBV(0): loads XCR0. Callers pass either the host's own XCR0 or a
/// guest value that `exits::xsetbv::valid_xcr0` accepted (a subset of the
/// host's, with the CPU's rules), so the instruction cannot fault and the
/// host's XSAVE area always covers what is enabled.
pub(crate) fn xsetbv(v: u64) {
    // SAFETY: as above; XSETBV changes which state components are enabled,
    // which only the owner of the FPU registers (a guest section) does.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nomem, nostack, preserves_flags));
    }
}

/// The size in bytes of an XSAVE area for the current XCR0 (CPUID.0xD.0:EBX).
pub(crate) fn xsave_size() -> usize {
    core::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize
}

/// CPUID on this CPU: [EAX, EBX, ECX, EDX]. (CPUID exists on every x86-64
/// CPU and only writes registers; `core` wraps it safely.)
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads CR2 (the last page-fault address), which VMX does not switch.
pub(crate) fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR2 (to give the guest back its page-fault address).
pub(crate) fn write_cr2(v: u64) {
    // SAFETY: CR2 is only read by page-fault handlers at the time of a
    // fault; the host takes none between this write and the VM entry
    // (interrupts are off and no memory is touched).
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// The CS and SS selectors the kernel runs with.
pub(crate) fn read_cs_ss() -> (u16, u16) {
    let (cs, ss): (u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, ss", out(reg) ss, options(nomem, nostack, preserves_flags));
    }
    (cs, ss)
}

/// Runs the host's NMI handler for an NMI that caused a VM exit.
///
/// An NMI that arrives in VMX non-root operation is consumed by the VM exit
/// (with "NMI exiting" on) and leaves NMIs blocked until the next IRET. It
/// must be handled now and synchronously: an NMI sent to ourselves would
/// stay blocked, then be taken by the guest again at the next VM entry, and
/// exit again, forever. `int 2` runs the kernel's NMI entry through the IDT,
/// as KVM did before it switched to calling that entry directly (for FRED,
/// which rvmx refuses at load: caps.rs).
pub(crate) fn invoke_nmi_handler() {
    // SAFETY: vector 2 is the kernel's NMI gate (DPL 0, its own IST stack);
    // the NMI entry code saves and restores all state and returns with IRET.
    unsafe { asm!("int 2") };
}

/// The buffer the software L1D flush reads (kglue/run.c), for the module's
/// lifetime where that flush is used (caps.rs `L1dFlush::Software`).
///
/// # Invariants
///
/// While a value exists, the buffer is allocated: `l1d_flush_software` may
/// run.
pub(crate) struct L1dFlushBuffer(());

impl L1dFlushBuffer {
    pub(crate) fn new() -> kernel::error::Result<Self> {
        // SAFETY: allocates the module's one buffer; freed by Drop.
        kernel::error::to_result(unsafe { rvmx_glue_l1d_flush_alloc() })?;
        Ok(Self(()))
    }
}

impl Drop for L1dFlushBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`; no vCPU is left (the module unloads).
        unsafe { rvmx_glue_l1d_flush_free() };
    }
}

/// Flushes this CPU's L1 data cache by reading the buffer (KVM's software
/// L1TF mitigation, for CPUs without IA32_FLUSH_CMD).
///
/// # Safety
///
/// An `L1dFlushBuffer` exists.
pub(crate) unsafe fn l1d_flush_software() {
    // SAFETY: the buffer is allocated (caller); the call only reads it.
    unsafe { rvmx_glue_l1d_flush_sw() };
}

/// Loads a guest's breakpoint addresses (DR0-3) and DR6 into this CPU, for
/// the VM entry that follows (VM entry loads DR7 from the VMCS).
///
/// # Safety
///
/// Interrupts are off until the host's debug registers are put back after
/// the VM exit (the host's #DB handler must not see these).
pub(crate) unsafe fn load_guest_debug_regs(dr: &[u64; 4], dr6: u64) {
    // SAFETY: MOV to DR0-3, DR6 and DR7 only changes breakpoint state,
    // which the caller restores. DR7 goes to its idle 0x400 first: the
    // host's may arm breakpoints (perf, ptrace), which must not fire at
    // the guest's addresses until the entry loads the guest's DR7 (as
    // KVM's vcpu_enter_guest).
    unsafe {
        asm!("mov dr7, {}", in(reg) 0x400u64, options(nomem, nostack, preserves_flags));
        asm!("mov dr0, {}", in(reg) dr[0], options(nomem, nostack, preserves_flags));
        asm!("mov dr1, {}", in(reg) dr[1], options(nomem, nostack, preserves_flags));
        asm!("mov dr2, {}", in(reg) dr[2], options(nomem, nostack, preserves_flags));
        asm!("mov dr3, {}", in(reg) dr[3], options(nomem, nostack, preserves_flags));
        asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack, preserves_flags));
    }
}

/// Reads DR6 (after a VM exit: what the guest's debug exceptions left).
pub(crate) fn read_dr6() -> u64 {
    let v: u64;
    // SAFETY: reading DR6 in ring 0 has no side effect.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Puts DR6 back to its idle value (no debug condition recorded), as the
/// host's #DB handler expects it between debug exceptions.
pub(crate) fn clear_dr6() {
    // SAFETY: writing DR6's architectural idle value only clears status.
    unsafe { asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nomem, nostack, preserves_flags)) };
}
