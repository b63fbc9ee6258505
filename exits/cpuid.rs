// SPDX-License-Identifier: GPL-2.0

//! CPUID (reason 10): CPUID always exits in VMX non-root operation, so the
//! VMM decides what the guest sees. Until KVM_SET_CPUID2 exists, rvmx
//! answers with the host's CPUID, edited: VMX hidden (no nested VMX), the
//! "hypervisor present" bit set, the APIC ID the vCPU's id, OSXSAVE
//! following the guest's own CR4, and leaf 0x40000000 naming rvmx.

use super::{Action, ExitCtx};
use crate::hw;
use crate::vcpu::reg;
use crate::vmcs::fields::*;
use kernel::prelude::*;

/// "rvmxrvmxrvmx" in EBX, ECX, EDX of leaf 0x40000000.
const SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"rvmx"),
    u32::from_le_bytes(*b"rvmx"),
    u32::from_le_bytes(*b"rvmx"),
];

pub(crate) fn cpuid(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    // CAST: CPUID takes EAX and ECX.
    let leaf = ctx.regs[reg::RAX] as u32;
    let sub = ctx.regs[reg::RCX] as u32;
    let mut r = hw::cpuid(leaf, sub);
    match leaf {
        1 => {
            r[1] = (r[1] & 0x00ff_ffff) | (ctx.vcpu_id << 24);
            r[2] &= !(1 << 5); // VMX
            r[2] |= 1 << 31; // hypervisor present
            let osxsave = ctx.vmcs.read(CR4_READ_SHADOW).0 & (1 << 18) != 0;
            r[2] = (r[2] & !(1 << 27)) | (u32::from(osxsave) << 27);
        }
        0xb | 0x1f => r[3] = ctx.vcpu_id,
        0x4000_0000 => r = [0x4000_0000, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
        0x4000_0001..=0x4000_00ff => r = [0; 4],
        _ => {}
    }
    for (i, v) in [reg::RAX, reg::RBX, reg::RCX, reg::RDX].into_iter().zip(r) {
        ctx.regs[i] = u64::from(v);
    }
    ctx.skip_instruction()?;
    Ok(Action::Resume)
}
