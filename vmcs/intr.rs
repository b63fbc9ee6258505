// SPDX-License-Identifier: GPL-2.0

//! Interruption information: the one format of three VMCS fields, the
//! VM-entry interruption information (what VM entry injects), the VM-exit
//! interruption information (the event that caused an exit) and the
//! IDT-vectoring information (the event whose delivery an exit
//! interrupted). SDM Vol. 3C §25.8.3, §25.9.2, §25.9.3:
//!
//! | bits  | meaning                                                  |
//! |-------|----------------------------------------------------------|
//! | 7:0   | vector                                                   |
//! | 10:8  | type (`kind`): 0 external interrupt, 2 NMI, 3 hardware exception, 4 software interrupt, 5 privileged software exception, 6 software exception, 7 other |
//! | 11    | an error code is delivered                               |
//! | 12    | NMI unblocking due to IRET (exit fields only)            |
//! | 31    | valid                                                    |
//!
//! The three fields have this type (vmcs/fields.rs), so a raw integer can
//! never be written to one by mistake.

/// The exception vectors rvmx itself raises in a guest (SDM Vol. 3A
/// §6.3.1), one home for all the exit handlers.
pub(crate) mod vector {
    /// Debug exception.
    pub(crate) const DB: u8 = 1;
    /// Invalid opcode.
    pub(crate) const UD: u8 = 6;
    /// Stack-segment fault.
    pub(crate) const SS: u8 = 12;
    /// General protection.
    pub(crate) const GP: u8 = 13;
    /// Page fault.
    pub(crate) const PF: u8 = 14;
    /// Alignment check.
    pub(crate) const AC: u8 = 17;
    /// Machine check.
    pub(crate) const MC: u8 = 18;
}

/// The type of an event (bits 10:8).
pub(crate) mod kind {
    pub(crate) const EXTERNAL_INTERRUPT: u32 = 0;
    pub(crate) const NMI: u32 = 2;
    pub(crate) const HARDWARE_EXCEPTION: u32 = 3;
    pub(crate) const SOFTWARE_INTERRUPT: u32 = 4;
    pub(crate) const PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub(crate) const SOFTWARE_EXCEPTION: u32 = 6;
}

const VALID: u32 = 1 << 31;
const DELIVER_ERROR_CODE: u32 = 1 << 11;
const NMI_UNBLOCKING: u32 = 1 << 12;

/// One interruption-information value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntrInfo(pub(crate) u32);

impl IntrInfo {
    /// No event.
    pub(crate) const NONE: IntrInfo = IntrInfo(0);

    /// A valid event of type `kind` with `vector`, delivering an error code
    /// or not.
    pub(crate) fn event(kind: u32, vector: u8, error_code: bool) -> Self {
        let code = if error_code { DELIVER_ERROR_CODE } else { 0 };
        IntrInfo(VALID | (kind & 7) << 8 | u32::from(vector) | code)
    }

    /// Whether the field holds an event.
    pub(crate) fn valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Whether the field holds an event of type `kind`.
    pub(crate) fn is(self, kind: u32) -> bool {
        self.valid() && self.kind() == kind
    }

    pub(crate) fn kind(self) -> u32 {
        (self.0 >> 8) & 7
    }

    pub(crate) fn vector(self) -> u8 {
        // CAST: bits 7:0.
        self.0 as u8
    }

    pub(crate) fn has_error_code(self) -> bool {
        self.0 & DELIVER_ERROR_CODE != 0
    }

    /// The same event without bit 12, which the entry field reserves.
    pub(crate) fn without_nmi_unblocking(self) -> Self {
        IntrInfo(self.0 & !NMI_UNBLOCKING)
    }
}
