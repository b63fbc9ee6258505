// SPDX-License-Identifier: GPL-2.0

//! VMCS field encodings (SDM Vol. 3D, Appendix B), typed by width.
//!
//! Bits 14:13 of an encoding give the field's width (0: 16-bit, 1: 64-bit,
//! 2: 32-bit, 3: natural width) and bits 11:10 its kind (control, read-only
//! exit information, guest state, host state). Each constant here has the
//! Rust type of its width, and `Loaded::read`/`write` take and return that
//! width's integer type, so a 16-bit field can never be written with a
//! 64-bit value: the compiler checks it. The `const` assertions below check
//! every encoding's width bits against the type it was given.

use super::intr::IntrInfo;

/// A VMCS field whose values are of type `T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field<T> {
    pub(crate) encoding: u32,
    _width: core::marker::PhantomData<T>,
}

/// Field widths: the value type of each and the code in encoding bits 14:13.
pub(crate) trait Width: Copy {
    const CODE: u32;
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
}
impl Width for u16 {
    const CODE: u32 = 0;
    fn to_u64(self) -> u64 { u64::from(self) }
    // CAST: a 16-bit field's VMREAD value has bits 63:16 clear.
    fn from_u64(v: u64) -> Self { v as u16 }
}
impl Width for u64 {
    const CODE: u32 = 1;
    fn to_u64(self) -> u64 { self }
    fn from_u64(v: u64) -> Self { v }
}
impl Width for u32 {
    const CODE: u32 = 2;
    fn to_u64(self) -> u64 { u64::from(self) }
    // CAST: a 32-bit field's VMREAD value has bits 63:32 clear.
    fn from_u64(v: u64) -> Self { v as u32 }
}
/// Natural-width fields (64 bits on x86-64) are a distinct type so that the
/// width check tells them apart from the 64-bit ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Natural(pub(crate) u64);
impl Width for Natural {
    const CODE: u32 = 3;
    fn to_u64(self) -> u64 { self.0 }
    fn from_u64(v: u64) -> Self { Natural(v) }
}

/// The interruption-information fields are 32-bit fields of their own type
/// (vmcs/intr.rs).
impl Width for super::intr::IntrInfo {
    const CODE: u32 = 2;
    fn to_u64(self) -> u64 { u64::from(self.0) }
    // CAST: a 32-bit field's VMREAD value has bits 63:32 clear.
    fn from_u64(v: u64) -> Self { super::intr::IntrInfo(v as u32) }
}

impl<T: Width> Field<T> {
    /// A field with `encoding`; fails to compile (in a const) if the
    /// encoding's width bits do not match `T`.
    pub(crate) const fn new(encoding: u32) -> Self {
        assert!((encoding >> 13) & 3 == T::CODE, "VMCS field width does not match its type");
        Field { encoding, _width: core::marker::PhantomData }
    }
}

macro_rules! fields {
    ($($(#[$m:meta])* $name:ident: $t:ty = $enc:expr;)*) => {
        // A reference table: not every encoding is used yet.
        $( $(#[$m])* #[allow(dead_code)] pub(crate) const $name: Field<$t> = Field::<$t>::new($enc); )*
    };
}

fields! {
    // 16-bit control, guest and host fields.
    VPID: u16 = 0x0000;
    GUEST_ES_SELECTOR: u16 = 0x0800;
    GUEST_CS_SELECTOR: u16 = 0x0802;
    GUEST_SS_SELECTOR: u16 = 0x0804;
    GUEST_DS_SELECTOR: u16 = 0x0806;
    GUEST_FS_SELECTOR: u16 = 0x0808;
    GUEST_GS_SELECTOR: u16 = 0x080a;
    GUEST_LDTR_SELECTOR: u16 = 0x080c;
    GUEST_TR_SELECTOR: u16 = 0x080e;
    HOST_ES_SELECTOR: u16 = 0x0c00;
    HOST_CS_SELECTOR: u16 = 0x0c02;
    HOST_SS_SELECTOR: u16 = 0x0c04;
    HOST_DS_SELECTOR: u16 = 0x0c06;
    HOST_FS_SELECTOR: u16 = 0x0c08;
    HOST_GS_SELECTOR: u16 = 0x0c0a;
    HOST_TR_SELECTOR: u16 = 0x0c0c;

    // 64-bit fields.
    MSR_BITMAP: u64 = 0x2004;
    EXIT_MSR_STORE_ADDR: u64 = 0x2006;
    EXIT_MSR_LOAD_ADDR: u64 = 0x2008;
    ENTRY_MSR_LOAD_ADDR: u64 = 0x200a;
    TSC_OFFSET: u64 = 0x2010;
    EPT_POINTER: u64 = 0x201a;
    GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
    VMCS_LINK_POINTER: u64 = 0x2800;
    GUEST_IA32_DEBUGCTL: u64 = 0x2802;
    GUEST_IA32_PAT: u64 = 0x2804;
    GUEST_IA32_EFER: u64 = 0x2806;
    GUEST_PDPTE0: u64 = 0x280a;
    GUEST_PDPTE1: u64 = 0x280c;
    GUEST_PDPTE2: u64 = 0x280e;
    GUEST_PDPTE3: u64 = 0x2810;
    HOST_IA32_PAT: u64 = 0x2c00;
    HOST_IA32_EFER: u64 = 0x2c02;

    // 32-bit control fields.
    PIN_BASED_CONTROLS: u32 = 0x4000;
    PROC_BASED_CONTROLS: u32 = 0x4002;
    EXCEPTION_BITMAP: u32 = 0x4004;
    CR3_TARGET_COUNT: u32 = 0x400a;
    EXIT_CONTROLS: u32 = 0x400c;
    EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    ENTRY_CONTROLS: u32 = 0x4012;
    ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    ENTRY_INTR_INFO: IntrInfo = 0x4016;
    ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    ENTRY_INSTRUCTION_LEN: u32 = 0x401a;
    SECONDARY_PROC_CONTROLS: u32 = 0x401e;

    // 32-bit read-only VM-exit information.
    VM_INSTRUCTION_ERROR: u32 = 0x4400;
    EXIT_REASON: u32 = 0x4402;
    EXIT_INTR_INFO: IntrInfo = 0x4404;
    EXIT_INTR_ERROR_CODE: u32 = 0x4406;
    IDT_VECTORING_INFO: IntrInfo = 0x4408;
    IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
    EXIT_INSTRUCTION_LEN: u32 = 0x440c;
    EXIT_INSTRUCTION_INFO: u32 = 0x440e;

    // 32-bit guest state.
    GUEST_ES_LIMIT: u32 = 0x4800;
    GUEST_CS_LIMIT: u32 = 0x4802;
    GUEST_SS_LIMIT: u32 = 0x4804;
    GUEST_DS_LIMIT: u32 = 0x4806;
    GUEST_FS_LIMIT: u32 = 0x4808;
    GUEST_GS_LIMIT: u32 = 0x480a;
    GUEST_LDTR_LIMIT: u32 = 0x480c;
    GUEST_TR_LIMIT: u32 = 0x480e;
    GUEST_GDTR_LIMIT: u32 = 0x4810;
    GUEST_IDTR_LIMIT: u32 = 0x4812;
    GUEST_ES_AR: u32 = 0x4814;
    GUEST_CS_AR: u32 = 0x4816;
    GUEST_SS_AR: u32 = 0x4818;
    GUEST_DS_AR: u32 = 0x481a;
    GUEST_FS_AR: u32 = 0x481c;
    GUEST_GS_AR: u32 = 0x481e;
    GUEST_LDTR_AR: u32 = 0x4820;
    GUEST_TR_AR: u32 = 0x4822;
    GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    GUEST_ACTIVITY_STATE: u32 = 0x4826;
    GUEST_SYSENTER_CS: u32 = 0x482a;
    /// Loaded into the VMX-preemption timer at every VM entry.
    VMX_PREEMPTION_TIMER_VALUE: u32 = 0x482e;
    HOST_IA32_SYSENTER_CS: u32 = 0x4c00;

    // Natural-width control fields.
    CR0_GUEST_HOST_MASK: Natural = 0x6000;
    CR4_GUEST_HOST_MASK: Natural = 0x6002;
    CR0_READ_SHADOW: Natural = 0x6004;
    CR4_READ_SHADOW: Natural = 0x6006;

    // Natural-width read-only VM-exit information.
    EXIT_QUALIFICATION: Natural = 0x6400;
    GUEST_LINEAR_ADDRESS: Natural = 0x640a;

    // Natural-width guest state.
    GUEST_CR0: Natural = 0x6800;
    GUEST_CR3: Natural = 0x6802;
    GUEST_CR4: Natural = 0x6804;
    GUEST_ES_BASE: Natural = 0x6806;
    GUEST_CS_BASE: Natural = 0x6808;
    GUEST_SS_BASE: Natural = 0x680a;
    GUEST_DS_BASE: Natural = 0x680c;
    GUEST_FS_BASE: Natural = 0x680e;
    GUEST_GS_BASE: Natural = 0x6810;
    GUEST_LDTR_BASE: Natural = 0x6812;
    GUEST_TR_BASE: Natural = 0x6814;
    GUEST_GDTR_BASE: Natural = 0x6816;
    GUEST_IDTR_BASE: Natural = 0x6818;
    GUEST_DR7: Natural = 0x681a;
    GUEST_RSP: Natural = 0x681c;
    GUEST_RIP: Natural = 0x681e;
    GUEST_RFLAGS: Natural = 0x6820;
    GUEST_PENDING_DBG_EXCEPTIONS: Natural = 0x6822;
    GUEST_SYSENTER_ESP: Natural = 0x6824;
    GUEST_SYSENTER_EIP: Natural = 0x6826;

    // Natural-width host state.
    HOST_CR0: Natural = 0x6c00;
    HOST_CR3: Natural = 0x6c02;
    HOST_CR4: Natural = 0x6c04;
    HOST_FS_BASE: Natural = 0x6c06;
    HOST_GS_BASE: Natural = 0x6c08;
    HOST_TR_BASE: Natural = 0x6c0a;
    HOST_GDTR_BASE: Natural = 0x6c0c;
    HOST_IDTR_BASE: Natural = 0x6c0e;
    HOST_IA32_SYSENTER_ESP: Natural = 0x6c10;
    HOST_IA32_SYSENTER_EIP: Natural = 0x6c12;
    HOST_RIP: Natural = 0x6c16;
}

/// The guest-state fields of one segment register.
pub(crate) struct SegmentFields {
    pub(crate) selector: Field<u16>,
    pub(crate) base: Field<Natural>,
    pub(crate) limit: Field<u32>,
    pub(crate) access_rights: Field<u32>,
}

macro_rules! seg {
    ($s:ident, $b:ident, $l:ident, $a:ident) => {
        SegmentFields { selector: $s, base: $b, limit: $l, access_rights: $a }
    };
}
pub(crate) const GUEST_CS: SegmentFields = seg!(GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR);
pub(crate) const GUEST_DS: SegmentFields = seg!(GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR);
pub(crate) const GUEST_ES: SegmentFields = seg!(GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR);
pub(crate) const GUEST_FS: SegmentFields = seg!(GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR);
pub(crate) const GUEST_GS: SegmentFields = seg!(GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR);
pub(crate) const GUEST_SS: SegmentFields = seg!(GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR);
pub(crate) const GUEST_TR: SegmentFields = seg!(GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_AR);
pub(crate) const GUEST_LDTR: SegmentFields = seg!(GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR);
