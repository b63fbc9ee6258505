// SPDX-License-Identifier: GPL-2.0

//! The guest's state as the VMCS holds it, written with the rules the CPU
//! applies: CR0 and CR4 with their read shadows, the "IA-32e mode guest"
//! entry control, PAE paging, the interruptibility state (the STI/MOV SS
//! shadow, NMI blocking) and the interrupt- and NMI-window controls. Below
//! both the exit handlers (exits/) and the vCPU (vcpu/), which share them.

use crate::hw::{self, cr::*};
use crate::vmcs::{controls, fields::*, Loaded};
use kernel::prelude::*;

/// Guest interruptibility state (SDM Vol. 3C §25.4.2): blocking by STI
/// (bit 0) and by MOV SS/POP SS (bit 1), and by NMI (bit 3).
pub(crate) const BLOCKING_STI: u32 = 1 << 0;
pub(crate) const BLOCKING_MOVSS: u32 = 1 << 1;
pub(crate) const BLOCKING_STI_MOVSS: u32 = BLOCKING_STI | BLOCKING_MOVSS;
pub(crate) const BLOCKING_NMI: u32 = 1 << 3;

/// Turns "NMI-window exiting" on or off.
pub(crate) fn set_nmi_window_exiting(v: &mut Loaded<'_>, exiting: &mut bool, on: bool) -> Result {
    set_window_control(v, controls::proc::NMI_WINDOW_EXITING, exiting, on)
}

/// Sets processor-based control `bit` to `on`, unless `state` (what the
/// VMCS holds, tracked to spare the VMREAD/VMWRITE) says it already is.
fn set_window_control(v: &mut Loaded<'_>, bit: u32, state: &mut bool, on: bool) -> Result {
    if *state == on {
        return Ok(());
    }
    let c = v.read(PROC_BASED_CONTROLS);
    v.write(PROC_BASED_CONTROLS, if on { c | bit } else { c & !bit })?;
    *state = on;
    Ok(())
}

/// Sets or clears the guest's (virtual) NMI blocking.
pub(crate) fn set_nmi_blocking(v: &mut Loaded<'_>, on: bool) -> Result {
    let s = v.read(GUEST_INTERRUPTIBILITY);
    let n = if on { s | BLOCKING_NMI } else { s & !BLOCKING_NMI };
    if n != s {
        v.write(GUEST_INTERRUPTIBILITY, n)?;
    }
    Ok(())
}

/// Turns "interrupt-window exiting" on or off.
pub(crate) fn set_irq_window_exiting(v: &mut Loaded<'_>, exiting: &mut bool, on: bool) -> Result {
    set_window_control(v, controls::proc::INTERRUPT_WINDOW_EXITING, exiting, on)
}

/// Ends an STI or MOV SS interrupt shadow: called whenever rvmx moves RIP
/// past an instruction itself, as the CPU would have (KVM does the same).
pub(crate) fn clear_interrupt_shadow(v: &mut Loaded<'_>) -> Result {
    let s = v.read(GUEST_INTERRUPTIBILITY);
    if s & BLOCKING_STI_MOVSS != 0 {
        v.write(GUEST_INTERRUPTIBILITY, s & !BLOCKING_STI_MOVSS)?;
    }
    Ok(())
}

/// Writes the guest's CR0: the VMCS holds what the CPU runs with (NE forced
/// on, CD/NW off, as KVM does), the read shadow what the guest believes.
pub(crate) fn set_cr0(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, cr0: u64) -> Result {
    let forced = caps.cr0_fixed0 & !(CR0_PE | CR0_PG);
    v.write(CR0_READ_SHADOW, Natural(cr0))?;
    v.write(GUEST_CR0, Natural((cr0 & !(CR0_CD | CR0_NW)) | forced))
}

/// Writes the guest's CR4 (VMXE forced on but hidden by the shadow). CR4.MCE
/// is the host's while the guest runs, whatever the guest wrote: with it
/// clear, a machine check in non-root operation would shut the host CPU
/// down (SDM Vol. 3B §16.10), and the exit that delivers it to the host
/// needs it set. The guest reads its own value from the shadow, as in KVM's
/// vmx_set_cr4.
pub(crate) fn set_cr4(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, cr4: u64) -> Result {
    v.write(CR4_READ_SHADOW, Natural(cr4))?;
    let hw = (cr4 & !CR4_MCE) | (hw::cr4_shadow() & CR4_MCE) | caps.cr4_fixed0;
    v.write(GUEST_CR4, Natural(hw))
}

/// Whether the guest uses 32-bit PAE paging (CR0.PG, CR4.PAE, not long
/// mode): then VM entry loads its PDPTEs from the VMCS.
pub(crate) fn pae_paging(v: &Loaded<'_>) -> bool {
    v.guest_cr0() & CR0_PG != 0
        && v.guest_cr4() & CR4_PAE != 0
        && v.read(GUEST_IA32_EFER) & EFER_LMA == 0
}

/// The "IA-32e mode guest" VM-entry control must match EFER.LMA.
pub(crate) fn set_long_mode(v: &mut Loaded<'_>, on: bool) -> Result {
    let e = v.read(ENTRY_CONTROLS);
    let bit = controls::entry::IA32E_MODE_GUEST;
    v.write(ENTRY_CONTROLS, if on { e | bit } else { e & !bit })
}
