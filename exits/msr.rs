// SPDX-License-Identifier: GPL-2.0

//! RDMSR (reason 31) and WRMSR (reason 32): the guest touched an MSR that
//! the MSR bitmap (msrs/) does not pass through. ECX names the MSR,
//! EDX:EAX holds the value. msrs/mod.rs knows each MSR; one the guest does not
//! have gets #GP(0), as the CPU would raise, and the host's MSR is never
//! touched.

use super::{Action, ExitCtx};
use crate::guest::reg;
use kernel::prelude::*;

use crate::vmcs::intr::vector::GP;

pub(crate) fn rdmsr(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    // CAST: RDMSR takes the index in ECX.
    let index = ctx.regs[reg::RCX] as u32;
    match ctx.guest.msrs.get(ctx.vmcs, index, true) {
        Some(v) => {
            ctx.regs[reg::RAX] = v & 0xffff_ffff;
            ctx.regs[reg::RDX] = v >> 32;
            ctx.skip_instruction()?;
            Ok(Action::Resume)
        }
        None => ctx.inject_exception(GP, Some(0)),
    }
}

pub(crate) fn wrmsr(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    // CAST: WRMSR takes the index in ECX.
    let index = ctx.regs[reg::RCX] as u32;
    let value = (ctx.regs[reg::RDX] << 32) | (ctx.regs[reg::RAX] & 0xffff_ffff);
    match ctx.guest.msrs.set(ctx.vmcs, index, value, true, false) {
        Ok(()) => {
            ctx.skip_instruction()?;
            Ok(Action::Resume)
        }
        Err(_) => ctx.inject_exception(GP, Some(0)),
    }
}
