// SPDX-License-Identifier: GPL-2.0

//! VMX instructions executed by the guest (VMCLEAR, VMLAUNCH, VMPTRLD,
//! VMPTRST, VMREAD, VMRESUME, VMWRITE, VMXOFF, VMXON, INVEPT, INVVPID,
//! VMFUNC): they always exit in non-root operation. rvmx offers no nested
//! VMX (CPUID hides it), so the guest gets the #UD a CPU without VMX gives.

use super::{Action, ExitCtx};
use kernel::prelude::*;

use crate::vmcs::intr::vector::UD;

pub(crate) fn vmx_instruction(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.inject_exception(UD, None)
}
