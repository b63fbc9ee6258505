// SPDX-License-Identifier: GPL-2.0

//! The architectural rules rvmx applies when it delivers an exception to
//! the guest itself: which exceptions are *faults* (the CPU sets RF in the
//! RFLAGS image it pushes for them), and how a debug exception (#DB)
//! records itself in DR6 and clears DR7.GD. Plain `core`: tests/unit
//! checks these rules on the build machine.
//!
//! Why rvmx must know them: it intercepts #DB and #AC (exits/exception.rs)
//! and raises #DB itself after an instruction it emulated with RFLAGS.TF
//! set (exits/mod.rs), and VM entry's event injection does none of what
//! the CPU does around a #DB it raises by itself: it writes no DR6, clears
//! no DR7.GD (SDM Vol. 3C §27.6.1). A #DB that exits leaves DR6 untouched
//! too; the exit qualification says what the CPU would have recorded, in
//! the format of the "pending debug exceptions" field (SDM Vol. 3C
//! §28.2.1, table 28-1): B0-B3 (bits 3:0), BD (13), BS (14) and RTM (16),
//! all active high, whereas DR6's RTM bit is active low. KVM calls that
//! value the #DB *payload* and turns it into DR6 at delivery
//! (x86.c, kvm_deliver_exception_payload); rvmx does the same.

/// DR6's breakpoint-condition bits B0-B3: every #DB rewrites them.
pub(crate) const DR6_TRAP_BITS: u64 = 0xf;
/// DR6.BD: a MOV DR found DR7.GD set (general detect).
pub(crate) const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step (RFLAGS.TF).
pub(crate) const DR6_BS: u64 = 1 << 14;
/// DR6.RTM: active low in DR6 (0 means "in an RTM region"), active high
/// in the payload.
pub(crate) const DR6_RTM: u64 = 1 << 16;
/// The low 32 bits of DR6 that always read as 1.
pub(crate) const DR6_FIXED_1: u64 = 0xfffe_0ff0;
/// The bits of DR6 whose value 1 means "nothing happened".
pub(crate) const DR6_ACTIVE_LOW: u64 = DR6_FIXED_1 | DR6_RTM;
/// DR6 bits software can change (B0-B3, BLD, BD, BS, BT, RTM); the rest
/// of the low 32 bits are fixed to 1 and bits 63:32 to 0.
pub(crate) const DR6_VOLATILE: u64 = 0x0001_e80f;
/// DR7.GD: general detect. The CPU clears it when it delivers a #DB, so
/// that the handler may use the debug registers.
pub(crate) const DR7_GD: u64 = 1 << 13;
/// RFLAGS.TF (trap: single step), RFLAGS.RF (resume: no instruction
/// breakpoint on the next instruction) and RFLAGS.AC (alignment check).
pub(crate) const RFLAGS_TF: u64 = 1 << 8;
pub(crate) const RFLAGS_RF: u64 = 1 << 16;
pub(crate) const RFLAGS_AC: u64 = 1 << 18;

/// DR6 after a #DB whose payload (exit qualification or pending-debug
/// format) is `payload`, from `dr6` before it: B0-B3 are rewritten, the
/// payload's active-high bits set, its RTM bit cleared in DR6 (active
/// low), bit 12 (defined in the payload, reserved in DR6) dropped, the
/// fixed bits fixed. The steps of KVM's kvm_deliver_exception_payload.
pub(crate) fn dr6_after_debug_exception(dr6: u64, payload: u64) -> u64 {
    let mut d = dr6 & !DR6_TRAP_BITS;
    d |= DR6_RTM;
    d &= !(payload & DR6_ACTIVE_LOW);
    d |= payload & !DR6_ACTIVE_LOW;
    d &= !(1 << 12);
    (d & DR6_VOLATILE) | DR6_FIXED_1
}

/// Whether exception `vector` is a fault, for which the CPU pushes RFLAGS
/// with RF set (SDM Vol. 3A §18.3.1.1: every fault but an instruction
/// breakpoint), so that the handler's IRET does not trip an instruction
/// breakpoint on the faulting instruction again. #DB, #BP and #OF are
/// traps (a fault-like #DB, the instruction breakpoint, is the exception
/// to the rule: no RF), #DF and #MC aborts, the NMI no exception. As
/// KVM's exception_type() == EXCPT_FAULT.
pub(crate) fn is_fault(vector: u8) -> bool {
    vector < 32 && !matches!(vector, 1 | 2 | 3 | 4 | 8 | 18)
}
