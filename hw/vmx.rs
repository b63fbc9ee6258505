// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions, each wrapped so that its outcome is a `Result`.
//!
//! A VMX instruction reports failure in RFLAGS (SDM Vol. 3C §31.2,
//! "Conventions"): CF=1 is *VMfailInvalid* (no current VMCS to hold an error
//! number), ZF=1 is *VMfailValid* (the VM-instruction error field says why).
//! The flags are read in the same `asm!` block as the instruction, so nothing
//! can clobber them in between. An instruction may also *fault* (#UD outside
//! VMX operation, #GP for a bad operand): the exception-table entry turns the
//! fault into `VmxError::Fault` instead of an oops, as KVM's vmx_ops.h does.

use crate::addr::Hpa;
use core::arch::asm;

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxError {
    /// CF=1: VMfailInvalid.
    FailInvalid,
    /// ZF=1: VMfailValid; the error number is in the VMCS (SDM §31.4).
    FailValid,
    /// The instruction raised #UD or #GP and the exception table caught it.
    Fault,
}

/// Emits an `__ex_table` entry that resumes at `$to` if the instruction at
/// `$from` faults (EX_TYPE_DEFAULT = 1, arch/x86/include/asm/asm.h).
macro_rules! ex_table {
    ($from:literal, $to:literal) => {
        concat!(
            ".pushsection __ex_table, \"a\"\n",
            ".balign 4\n",
            ".long ", $from, " - .\n",
            ".long ", $to, " - .\n",
            ".long 1\n",
            ".popsection\n"
        )
    };
}

/// Turns the (CF, ZF, faulted) triple captured after a VMX instruction into
/// a result (CF and ZF mean nothing after a fault).
fn outcome(cf: u8, zf: u8, fault: u32) -> Result<(), VmxError> {
    if fault != 0 {
        Err(VmxError::Fault)
    } else if cf != 0 {
        Err(VmxError::FailInvalid)
    } else if zf != 0 {
        Err(VmxError::FailValid)
    } else {
        Ok(())
    }
}

/// Executes one VMX instruction (`$insn`, an assembly template using the
/// extra `asm!` operands given after it) and evaluates to its outcome: the
/// instruction's CF and ZF are captured right after it, and a fault jumps
/// (through the exception table) to code that records it. Must be used in
/// an `unsafe` block whose SAFETY comment argues for the instruction.
macro_rules! vmx_insn {
    ($insn:literal $(, $($operands:tt)+)?) => {{
        let (cf, zf, fault): (u8, u8, u32);
        asm!(
            "xor {f:e}, {f:e}",
            concat!("2: ", $insn),
            "setc {cf}",
            "setz {zf}",
            "jmp 4f",
            "3: mov {f:e}, 1",
            "4:",
            ex_table!("2b", "3b"),
            $($($operands)+,)?
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            f = out(reg) fault,
            options(nostack),
        );
        outcome(cf, zf, fault)
    }};
}

/// VMXON: enters VMX root operation on this CPU, with the 4 KiB VMXON region
/// at physical address `region`.
///
/// # Safety
///
/// `region` must be the physical address of a 4 KiB-aligned page that holds
/// the VMCS revision identifier in its first 4 bytes and is owned for as long
/// as this CPU stays in VMX operation; CR4.VMXE must be set and the caller
/// must not be preempted between this call and recording the result.
pub(crate) unsafe fn vmxon(region: Hpa) -> Result<(), VmxError> {
    // SAFETY: the caller provides a valid VMXON region; a fault (e.g. #GP from
    // IA32_FEATURE_CONTROL or fixed CR bits) is caught by the extable entry.
    unsafe { vmx_insn!("vmxon qword ptr [{r}]", r = in(reg) &region.0) }
}

/// VMXOFF: leaves VMX operation on this CPU. Safe to call when not in VMX
/// operation: the #UD is caught and reported as `VmxError::Fault`, which is
/// what the emergency (NMI) path relies on.
pub(crate) fn vmxoff() -> Result<(), VmxError> {
    // SAFETY: VMXOFF touches no memory of ours; outside VMX operation it
    // raises #UD, which the exception-table entry turns into `fault = 1`.
    unsafe { vmx_insn!("vmxoff") }
}

/// VMCLEAR: writes the VMCS at physical address `vmcs` back to memory,
/// makes it inactive and not current on this CPU, and sets its launch state
/// to "clear" (the next entry must be VMLAUNCH).
///
/// # Safety
///
/// `vmcs` must be the physical address of a VMCS region owned by the caller
/// that is not active on any other CPU.
pub(crate) unsafe fn vmclear(vmcs: Hpa) -> Result<(), VmxError> {
    // SAFETY: the caller owns the region; a fault is caught.
    unsafe { vmx_insn!("vmclear qword ptr [{r}]", r = in(reg) &vmcs.0) }
}

/// VMPTRLD: makes the VMCS at physical address `vmcs` current (and active)
/// on this CPU; VMREAD/VMWRITE/VMLAUNCH then operate on it.
///
/// # Safety
///
/// As `vmclear`: a VMCS region owned by the caller, initialized with the
/// revision id, not active on another CPU.
pub(crate) unsafe fn vmptrld(vmcs: Hpa) -> Result<(), VmxError> {
    // SAFETY: the caller owns the region; a fault is caught.
    unsafe { vmx_insn!("vmptrld qword ptr [{r}]", r = in(reg) &vmcs.0) }
}

/// VMREAD of the field with encoding `field` from the current VMCS.
///
/// # Safety
///
/// A VMCS must be current on this CPU (`vmcs::Loaded` guarantees it).
pub(crate) unsafe fn vmread(field: u32) -> Result<u64, VmxError> {
    let value: u64;
    // SAFETY: register operands only; a fault is caught (and `value` is
    // then 0, set before the instruction).
    let r = unsafe {
        vmx_insn!("vmread {v}, {e}", e = in(reg) u64::from(field), v = inout(reg) 0u64 => value)
    };
    r.map(|()| value)
}

/// VMWRITE of `value` to the field with encoding `field` of the current VMCS.
///
/// # Safety
///
/// A VMCS must be current on this CPU, and the caller must own the guest or
/// host state the field controls (`vmcs::Loaded` is the only caller).
pub(crate) unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmxError> {
    // SAFETY: register operands only; a fault is caught.
    unsafe { vmx_insn!("vmwrite {e}, {v}", e = in(reg) u64::from(field), v = in(reg) value) }
}

/// INVEPT single-context (type 1): drops every cached translation derived
/// from the EPT paging structures rooted at `eptp` on this CPU.
pub(crate) fn invept_single(eptp: u64) -> Result<(), VmxError> {
    let desc: [u64; 2] = [eptp, 0];
    // SAFETY: INVEPT only invalidates TLB entries (never unsafe for memory);
    // outside VMX operation or with an unsupported type it faults or fails,
    // which is reported.
    unsafe { vmx_insn!("invept {t}, [{d}]", t = in(reg) 1u64, d = in(reg) desc.as_ptr()) }
}

/// INVEPT all-context (type 2): drops every cached translation derived
/// from any EPT on this CPU.
pub(crate) fn invept_global() -> Result<(), VmxError> {
    let desc: [u64; 2] = [0, 0];
    // SAFETY: as `invept_single`.
    unsafe { vmx_insn!("invept {t}, [{d}]", t = in(reg) 2u64, d = in(reg) desc.as_ptr()) }
}

/// INVVPID single-context (type 1): drops every cached linear translation
/// tagged with `vpid` on this CPU (SDM Vol. 3C §31.3, "INVVPID").
pub(crate) fn invvpid_single(vpid: u16) -> Result<(), VmxError> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    // SAFETY: INVVPID only invalidates TLB entries; a failure or fault
    // (VPID 0, type unsupported, outside VMX operation) is reported.
    unsafe { vmx_insn!("invvpid {t}, [{d}]", t = in(reg) 1u64, d = in(reg) desc.as_ptr()) }
}
