// SPDX-License-Identifier: GPL-2.0

//! MONITOR (reason 39) and MWAIT (reason 36): wait for a write to an
//! address range, in a low-power state. Executed natively, MWAIT would put
//! the host's CPU to sleep in the guest's name (the CPU would then not take
//! the host's timer for as long as the guest chose), so rvmx sets "MONITOR
//! exiting" and "MWAIT exiting" and skips both: an MWAIT that returns at
//! once is allowed by the SDM (it may end for any reason), so the guest
//! falls back to polling. rvmx's CPUID does not offer MONITOR (leaf 1, ECX
//! bit 3), but a guest may try it anyway (SeaBIOS and Linux's idle loop
//! do not, but other code does): like KVM with its default
//! "MWAIT never #UD" quirk (kvm_emulate_monitor_mwait), rvmx treats them
//! as NOPs rather than #UD.

use super::{Action, ExitCtx};
use kernel::prelude::*;

pub(crate) fn monitor_or_mwait(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}
