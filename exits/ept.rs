// SPDX-License-Identifier: GPL-2.0

//! EPT violations (reason 48): the guest touched a guest-physical address
//! that EPT does not map, or wrote where EPT allows only reads. rvmx maps
//! guest memory lazily, so the first touch of every page lands here. The
//! handler only records what happened (and the guest state needed to decode
//! the instruction, should it be MMIO); the run loop then leaves the guest
//! section, because pinning the page or reading guest memory may sleep
//! (vcpu/run.rs, vm.rs `fault_in`, mmio.rs).
//! Exit qualification (SDM Vol. 3C, table 28-7): bit 0 read, bit 1 write,
//! bit 2 instruction fetch; bit 7 the guest linear address is valid, and
//! then bit 8 says whether the access was to that address (1) or to one of
//! the guest's paging-structure entries while translating it (0).

use super::{Action, ExitCtx};
use crate::addr::Gpa;
use crate::vmcs::fields::*;
use crate::vmcs::qualification::EptQual;
use kernel::prelude::*;

/// An EPT violation: what every one of them needs (most are the first
/// touch of a page of RAM). The guest state needed to emulate an MMIO
/// access is read only for those (exits/mmio.rs).
pub(crate) struct EptFault {
    pub(crate) gpa: Gpa,
    pub(crate) write: bool,
    pub(crate) fetch: bool,
    pub(crate) qualification: EptQual,
    /// IDT-vectoring information: valid when the violation interrupted the
    /// delivery of an event (the IDT, a stack or the TSS in MMIO).
    pub(crate) vectoring_info: crate::vmcs::intr::IntrInfo,
    /// The access was the CPU's walk of the guest's page tables, not the
    /// instruction's own access (qualification bit 7 set, bit 8 clear).
    pub(crate) in_page_walk: bool,
}

pub(crate) fn ept_violation(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let q = EptQual(ctx.vmcs.read(EXIT_QUALIFICATION).0);
    // Bit 12: the faulting access was the guest's IRET from an NMI handler,
    // which had already unblocked NMIs. The IRET runs again after the
    // fault is resolved, so the blocking must be put back (SDM Vol. 3C
    // §28.2.3), unless the exit interrupted an event's delivery.
    if q.nmi_unblocking() && !ctx.vmcs.read(IDT_VECTORING_INFO).valid() {
        crate::vmcs::guest::set_nmi_blocking(ctx.vmcs, true)?;
    }
    let v = &ctx.vmcs;
    Ok(Action::EptViolation(EptFault {
        gpa: Gpa(v.read(GUEST_PHYSICAL_ADDRESS)),
        write: q.write(),
        fetch: q.fetch(),
        qualification: q,
        vectoring_info: v.read(IDT_VECTORING_INFO),
        in_page_walk: q.in_page_walk(),
    }))
}
