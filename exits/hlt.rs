// SPDX-License-Identifier: GPL-2.0

//! HLT (reason 12): the guest has nothing to do until an interrupt.
//! rvmx emulates no interrupt controller, so, as KVM does without an
//! in-kernel local APIC, it hands the halt to userspace (KVM_EXIT_HLT),
//! with RIP already past the HLT.

use super::{Action, ExitCtx};
use crate::uapi;
use kernel::prelude::*;

pub(crate) fn hlt(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.skip_instruction()?;
    Ok(ctx.exit_to_user(uapi::KVM_EXIT_HLT))
}
