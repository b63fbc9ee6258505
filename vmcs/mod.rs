// SPDX-License-Identifier: GPL-2.0

//! The VMCS (virtual-machine control structure): one 4 KiB region per vCPU
//! holding the guest-state area, the host-state area, the VM-execution,
//! VM-exit and VM-entry controls, and the VM-exit information fields (SDM
//! Vol. 3C ch. 25). Software never touches the region's bytes: it makes the
//! VMCS *current* on a CPU with VMPTRLD and then uses VMREAD/VMWRITE.
//!
//! - `Vmcs` owns a region (allocated, revision id written, VMCLEARed).
//! - `Loaded` exists only while that VMCS is current on this CPU with
//!   preemption disabled: it is the only way to VMREAD/VMWRITE, and its
//!   `Drop` VMCLEARs, so a VMCS is never left active on a CPU that the vCPU
//!   thread may leave (see vcpu/mod.rs for why that scheme is correct).
//! - `fields` lists the field encodings, typed by width; `intr` is the type
//!   of the three interruption-information fields; `qualification` has a
//!   type for each exit reason's exit qualification.
//! - `checks` holds the SDM's VM-entry checks, to name the rule a failed
//!   entry broke (exits/entry_failure.rs).

pub(crate) mod checks;
pub(crate) mod controls;
pub(crate) mod fields;
pub(crate) mod intr;
pub(crate) mod qualification;

use crate::addr::Hpa;
use crate::kglue::{rvmx_glue_page_to_phys, rvmx_glue_preempt_disable, rvmx_glue_preempt_enable};
use crate::hw::vmx::{self, VmxError};
use fields::{Field, Width};
use kernel::{alloc::flags, page::Page, prelude::*};

/// A VMCS region.
///
/// # Invariants
///
/// `pa` is the physical address of `page`, which starts with the VMCS
/// revision id. Outside a `Loaded` the VMCS is clear (not active anywhere).
/// Dropping it frees the page: no CPU holds a clear VMCS.
pub(crate) struct Vmcs {
    _page: Page,
    pa: Hpa,
}

impl Vmcs {
    /// Allocates a VMCS region for a CPU with VMCS revision `revision_id`.
    pub(crate) fn new(revision_id: u32) -> Result<Self> {
        // Charged to the VMM's memory cgroup, as KVM's.
        let page = Page::alloc_page(flags::GFP_KERNEL_ACCOUNT | flags::__GFP_ZERO)?;
        // SAFETY: `page` is a valid page we own; 4 bytes at offset 0.
        unsafe { page.write_raw(revision_id.to_ne_bytes().as_ptr(), 0, 4)? };
        // SAFETY: `as_ptr()` is the page we own.
        let pa = Hpa(unsafe { rvmx_glue_page_to_phys(page.as_ptr().cast()) });
        // SAFETY: the region is ours, initialized, and not active anywhere.
        unsafe { vmx::vmclear(pa) }.map_err(|_| EIO)?;
        // INVARIANT: `pa` belongs to `page`, which holds the revision id.
        Ok(Self { _page: page, pa })
    }

    /// Disables preemption and makes this VMCS current on this CPU.
    pub(crate) fn load(&mut self) -> Result<Loaded<'_>> {
        // SAFETY: balanced by `rvmx_glue_preempt_enable` in `Loaded::drop`
        // or just below.
        unsafe { rvmx_glue_preempt_disable() };
        // SAFETY: by the type invariant the VMCS is clear, so it is active
        // on no other CPU; `&mut self` keeps anyone else from loading it.
        match unsafe { vmx::vmptrld(self.pa) } {
            Ok(()) => Ok(Loaded { vmcs: self }),
            Err(e) => {
                // SAFETY: pairs with the disable above.
                unsafe { rvmx_glue_preempt_enable() };
                log_vmx_failure("VMPTRLD", e);
                Err(EIO)
            }
        }
    }
}

fn log_vmx_failure(what: &str, e: VmxError) {
    // These only happen if VMX was turned off under a running vCPU (an
    // emergency reboot) or on a bug in rvmx.
    pr_err!("{} failed: {:?}\n", what, e);
}

/// A VMCS that is current on this CPU, with preemption disabled.
///
/// # Invariants
///
/// While a `Loaded` exists, `vmcs` is the current VMCS of this CPU and the
/// thread cannot migrate. Dropping it VMCLEARs the VMCS and re-enables
/// preemption.
pub(crate) struct Loaded<'a> {
    vmcs: &'a mut Vmcs,
}

impl Loaded<'_> {
    /// VMREAD of a field, as its width's type. A failure (an encoding this
    /// CPU does not support) reads as 0 and is logged.
    pub(crate) fn read<T: Width>(&self, f: Field<T>) -> T {
        // SAFETY: by the type invariant a VMCS is current on this CPU.
        match unsafe { vmx::vmread(f.encoding) } {
            Ok(v) => T::from_u64(v),
            Err(e) => {
                pr_err!("VMREAD {:#x} failed: {:?}\n", f.encoding, e);
                T::from_u64(0)
            }
        }
    }

    /// VMWRITE of a field.
    pub(crate) fn write<T: Width>(&mut self, f: Field<T>, v: T) -> Result {
        // SAFETY: by the type invariant a VMCS is current on this CPU, and
        // `&mut self` means we own the vCPU whose VMCS this is.
        unsafe { vmx::vmwrite(f.encoding, v.to_u64()) }.map_err(|e| {
            pr_err!("VMWRITE {:#x} = {:#x} failed: {:?}\n", f.encoding, v.to_u64(), e);
            EIO
        })
    }

    /// CR0 as the guest sees it. The bits the guest owns (clear in the
    /// guest/host mask) it changes without an exit, so they are in
    /// GUEST_CR0; the bits rvmx owns read as the read shadow (SDM Vol. 3C
    /// §25.6.6). Neither field alone is the guest's CR0.
    pub(crate) fn guest_cr0(&self) -> u64 {
        let mask = self.read(fields::CR0_GUEST_HOST_MASK).0;
        (self.read(fields::GUEST_CR0).0 & !mask) | (self.read(fields::CR0_READ_SHADOW).0 & mask)
    }

    /// CR4 as the guest sees it (see `guest_cr0`).
    pub(crate) fn guest_cr4(&self) -> u64 {
        let mask = self.read(fields::CR4_GUEST_HOST_MASK).0;
        (self.read(fields::GUEST_CR4).0 & !mask) | (self.read(fields::CR4_READ_SHADOW).0 & mask)
    }

    /// The guest's current privilege level: SS.DPL (access rights bits
    /// 6:5), which the VMCS keeps as the CPU does, also in real mode (0)
    /// and virtual-8086 mode (3).
    pub(crate) fn guest_cpl(&self) -> u32 {
        (self.read(fields::GUEST_SS_AR) >> 5) & 3
    }

    /// The VM-instruction error number after a VMfailValid (SDM §31.4).
    pub(crate) fn instruction_error(&self) -> u32 {
        self.read(fields::VM_INSTRUCTION_ERROR)
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        // SAFETY: the VMCS is current on this CPU (type invariant); after
        // VMCLEAR it is clear again, restoring `Vmcs`'s invariant.
        if let Err(e) = unsafe { vmx::vmclear(self.vmcs.pa) } {
            log_vmx_failure("VMCLEAR", e);
        }
        // SAFETY: pairs with the disable in `Vmcs::load`.
        unsafe { rvmx_glue_preempt_enable() };
    }
}
