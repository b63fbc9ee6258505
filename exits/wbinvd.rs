// SPDX-License-Identifier: GPL-2.0

//! WBINVD and WBNOINVD (reason 54): write back and invalidate every cache
//! of the CPU; INVD (reason 13): invalidate them *without* writing back.
//! Executed natively they would flush the *host's* caches, a
//! cheap way for a guest to slow every other process down, so rvmx sets
//! "WBINVD exiting" and skips the instruction. That is what KVM does when
//! no device can DMA into guest memory behind the caches' back (no assigned
//! devices: kvm_emulate_wbinvd); rvmx's guests have no such devices, and
//! their memory is ordinary write-back memory, coherent with every CPU.
//!
//! INVD exits unconditionally (there is no control for it): executed
//! natively it would throw away the host's dirty cache lines. rvmx skips
//! it too, as KVM's kvm_emulate_invd does: with coherent write-back memory
//! the guest cannot tell a skipped INVD from a WBINVD.

use super::{Action, ExitCtx};
use kernel::prelude::*;

pub(crate) fn wbinvd(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}

pub(crate) fn invd(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}
