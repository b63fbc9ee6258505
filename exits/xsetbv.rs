// SPDX-License-Identifier: GPL-2.0

//! XSETBV (reason 55, always exits): the guest sets XCR0, the set of
//! processor state components (x87, SSE, AVX, ...) that XSAVE manages and
//! that the guest may use. VMX does not switch XCR0, so rvmx keeps the
//! guest's value and loads it around each guest section (vcpu/run.rs). A value
//! the CPU would refuse, or one that enables a component the host has not
//! enabled (the guest could then reach state rvmx does not save), gets #GP,
//! with KVM's checks (__kvm_set_xcr).

use super::{Action, ExitCtx};
use crate::hw;
use crate::guest::reg;
use kernel::prelude::*;

use crate::vmcs::intr::vector::GP;
const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const AVX: u64 = 1 << 2;
const BNDREGS: u64 = 1 << 3;
const BNDCSR: u64 = 1 << 4;
const AVX512: u64 = 0b111 << 5;

/// Whether `xcr0` is a value the guest may load, `allowed` being the
/// components rvmx switches for it (the host's XCR0 less PKRU, vcpu/mod.rs
/// `Guest::xfeatures`). (Inside a guest section the CPU's XCR0 may be the
/// guest's: the value is passed in, never read back here.)
pub(crate) fn valid_xcr0(xcr0: u64, allowed: u64) -> bool {
    xcr0 & X87 != 0
        && xcr0 & !allowed == 0
        && !(xcr0 & AVX != 0 && xcr0 & SSE == 0)
        && (xcr0 & BNDREGS != 0) == (xcr0 & BNDCSR != 0)
        && (xcr0 & AVX512 == 0 || (xcr0 & AVX512 == AVX512 && xcr0 & AVX != 0))
}

pub(crate) fn xsetbv(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    // CAST: ECX selects the XCR; only XCR0 exists.
    let index = ctx.regs[reg::RCX] as u32;
    let value = (ctx.regs[reg::RDX] << 32) | (ctx.regs[reg::RAX] & 0xffff_ffff);
    if index != 0 || !valid_xcr0(value, ctx.guest.xfeatures) {
        return ctx.inject_exception(GP, Some(0));
    }
    // The guest section loaded the old value; load the new one now (the
    // section puts the host's back when it ends).
    ctx.guest.xcr0 = value;
    hw::xsetbv(value);
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}
