// SPDX-License-Identifier: GPL-2.0

//! Debug-register accesses (reason 29). VMX does not switch DR0-3 and DR6,
//! so a guest executing MOV to DRn natively would change the *host's*
//! breakpoints. rvmx sets "MOV-DR exiting" and keeps the guest's debug
//! registers in software: a MOV to DRn stores the value (with the checks
//! and fixed bits of the CPU, as KVM's kvm_set_dr), a MOV from DRn reads it
//! back. VM entry loads the guest's DR7 from the VMCS ("load debug
//! controls"), which this file keeps equal to the guest's; while that DR7
//! arms a breakpoint, the run loop (vcpu/run.rs) loads the guest's DR0-3
//! and DR6 into the CPU before each entry and reads DR6 back after the
//! exit, so the guest's breakpoints fire with the guest's addresses and
//! never with the host's. The #DB they raise exits (exits/exception.rs)
//! and goes back to the guest with DR6 updated by rvmx. After every exit
//! the host's DR7, DR6 and IA32_DEBUGCTL are put back, since a VM exit
//! sets DR7 to 0x400 and clears IA32_DEBUGCTL.
//! Exit qualification (SDM Vol. 3C, table 28-4): bits 2:0 the debug
//! register, bit 4 the direction (1 = MOV from DR), bits 11:8 the GPR.

use super::exception_rules::{DR6_ACTIVE_LOW, DR6_BD, DR6_VOLATILE, DR7_GD};
use super::{Action, ExitCtx};
use crate::guest::DR7_FIXED_1;
use crate::vmcs::qualification::DrQual;
use crate::vmcs::{controls::entry::IA32E_MODE_GUEST, fields::*};
use kernel::prelude::*;

use crate::vmcs::intr::vector::{GP, UD};
const CR4_DE: u64 = 1 << 3;
/// DR7 bits software can change, and bit 10, which reads as 1.
const DR7_VOLATILE: u64 = 0xffff_2bff;


pub(crate) fn dr_access(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let q = DrQual(ctx.vmcs.read(EXIT_QUALIFICATION).0);
    let (mut n, from_dr, gpr) = (q.dr(), q.reads_dr(), q.gpr());
    // DR4 and DR5 are DR6 and DR7, unless CR4.DE makes them #UD.
    if n == 4 || n == 5 {
        if ctx.vmcs.guest_cr4() & CR4_DE != 0 {
            return ctx.inject_exception(UD, None);
        }
        n += 2;
    }
    // Only ring 0 may move to or from a debug register: #GP(0), as in
    // KVM's handle_dr (the CPU checks before the exit, but says nothing).
    if ctx.vmcs.guest_cpl() > 0 {
        return ctx.inject_exception(GP, Some(0));
    }
    // With DR7.GD set, any MOV DR raises #DB (BD) instead, which the exit
    // took precedence over (SDM Vol. 3C §26.1.1); the delivery clears GD.
    if ctx.guest.debug.dr7 & DR7_GD != 0 {
        super::exception::queue_debug_exception(ctx.vmcs, &mut ctx.guest.debug, DR6_BD)?;
        return Ok(Action::Resume);
    }
    // Outside 64-bit mode MOV DR moves 32 bits.
    let v64 = ctx.vmcs.read(ENTRY_CONTROLS) & IA32E_MODE_GUEST != 0 && ctx.vmcs.read(GUEST_CS_AR) & (1 << 13) != 0;
    let width = if v64 { u64::MAX } else { 0xffff_ffff };
    if from_dr {
        let d = &ctx.guest.debug;
        let v = match n {
            // CAST: n < 4 here.
            0..=3 => d.dr[n as usize],
            6 => d.dr6,
            _ => d.dr7,
        };
        ctx.set_gpr(gpr, v & width)?;
    } else {
        let v = ctx.gpr(gpr) & width;
        let d = &mut ctx.guest.debug;
        match n {
            // CAST: n < 4 here.
            0..=3 => d.dr[n as usize] = v,
            // Bits 63:32 of DR6 and DR7 are reserved: #GP(0).
            6 | 7 if v >> 32 != 0 => return ctx.inject_exception(GP, Some(0)),
            6 => d.dr6 = (v & DR6_VOLATILE) | DR6_ACTIVE_LOW,
            _ => {
                d.dr7 = (v & DR7_VOLATILE) | DR7_FIXED_1;
                let dr7 = d.dr7;
                ctx.vmcs.write(GUEST_DR7, Natural(dr7))?;
            }
        }
    }
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}
