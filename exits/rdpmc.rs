// SPDX-License-Identifier: GPL-2.0

//! RDPMC (reason 15): read a performance-monitoring counter. Executed
//! natively it would read the *host's* counters (what other processes on
//! this CPU are doing), so rvmx sets "RDPMC exiting". rvmx gives the guest
//! no performance-monitoring unit (CPUID leaf 0xA reads as zeros), so every
//! counter index is invalid and the instruction raises #GP(0), as KVM
//! does for a vCPU without a PMU (kvm_emulate_rdpmc).

use super::{Action, ExitCtx};
use kernel::prelude::*;

use crate::vmcs::intr::vector::GP;

pub(crate) fn rdpmc(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.inject_exception(GP, Some(0))
}
