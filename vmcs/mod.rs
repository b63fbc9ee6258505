// SPDX-License-Identifier: GPL-2.0

//! The VMCS (virtual-machine control structure): one 4 KiB region per vCPU
//! holding the guest-state area, the host-state area, the VM-execution,
//! VM-exit and VM-entry controls, and the VM-exit information fields (SDM
//! Vol. 3C ch. 25). Software never touches the region's bytes: it makes the
//! VMCS *current* on a CPU with VMPTRLD and then uses VMREAD/VMWRITE.
//!
//! - `Vmcs` owns a region (allocated, revision id written, VMCLEARed).
//! - `Loaded` exists only while that VMCS is current on this CPU with
//!   preemption disabled: it is the only way to VMREAD/VMWRITE. Its `Drop`
//!   leaves the VMCS *active* on the CPU (kglue/vmcs.c keeps the per-CPU
//!   list, as KVM's loaded_vmcss_on_cpu): the next load there costs nothing
//!   and the next entry is a VMRESUME. A load on another CPU has the old
//!   one VMCLEAR it first (see vcpu/mod.rs, "When is the VMCS loaded?").
//! - `fields` lists the field encodings, typed by width; `intr` is the type
//!   of the three interruption-information fields; `qualification` has a
//!   type for each exit reason's exit qualification.
//! - `checks` holds the SDM's VM-entry checks, to name the rule a failed
//!   entry broke (exits/entry_failure.rs).

pub(crate) mod checks;
pub(crate) mod controls;
pub(crate) mod exit_reason;
pub(crate) mod guest;
pub(crate) mod fields;
pub(crate) mod intr;
pub(crate) mod qualification;

use crate::addr::Hpa;
use crate::hw::vmx::{self, VmxError};
use crate::hw::{self, msr};
use crate::kglue::{
    rvmx_active_vmcs, rvmx_glue_active_vmcs_free, rvmx_glue_active_vmcs_launched, rvmx_glue_active_vmcs_load,
    rvmx_glue_active_vmcs_new, rvmx_glue_active_vmcs_set_launched, rvmx_glue_active_vmcs_unload, rvmx_glue_page_to_phys, rvmx_glue_preempt_disable,
    rvmx_glue_preempt_enable, RVMX_GLUE_VMCS_ARRIVED,
};
use core::ptr::NonNull;
use fields::{Field, Natural, Width};
use kernel::{alloc::flags, page::Page, prelude::*};

/// A VMCS region.
///
/// # Invariants
///
/// `page` starts with the VMCS revision id. `active` is kglue/vmcs.c's
/// record (with the page's physical address) of the CPU the VMCS is
/// active on (none, or one: only the holder of `&mut Vmcs` makes it
/// current, and kglue/vmcs.c VMCLEARs it on the old CPU first). Dropping
/// it VMCLEARs it wherever it is, then frees the page.
pub(crate) struct Vmcs {
    _page: Page,
    active: NonNull<rvmx_active_vmcs>,
}

// SAFETY: `active` is only used through `&mut Vmcs` (load) and by
// kglue/vmcs.c's IPIs, which synchronize with it.
unsafe impl Send for Vmcs {}

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
        // SAFETY: allocates kglue/vmcs.c's record; freed in `drop`.
        let active = NonNull::new(unsafe { rvmx_glue_active_vmcs_new(pa.0) }).ok_or(ENOMEM)?;
        // INVARIANT: `page` holds the revision id; the VMCS is clear, as
        // `active` says.
        Ok(Self { _page: page, active })
    }

    /// Disables preemption and makes this VMCS current on this CPU. If it
    /// is current here already (the vCPU last ran here, and nothing else
    /// was made current since), that costs nothing; if it is active on
    /// another CPU, that CPU VMCLEARs it first (an IPI), and the host
    /// state that differs per CPU is written here.
    pub(crate) fn load(&mut self) -> Result<Loaded<'_>> {
        // SAFETY: balanced by `rvmx_glue_preempt_enable` in `Loaded::drop`
        // or just below.
        unsafe { rvmx_glue_preempt_disable() };
        // SAFETY: preemption is off; `active` is ours (type invariant),
        // and `&mut self` keeps anyone else from loading it meanwhile.
        let r = unsafe { rvmx_glue_active_vmcs_load(self.active.as_ptr()) };
        if r < 0 {
            // SAFETY: pairs with the disable above.
            unsafe { rvmx_glue_preempt_enable() };
            pr_err!("VMPTRLD failed\n");
            return Err(EIO);
        }
        let mut v = Loaded { vmcs: self };
        if r == RVMX_GLUE_VMCS_ARRIVED as i32 {
            if let Err(e) = write_host_cpu_state(&mut v) {
                // Not recorded as active here, or the next load would
                // take the host state for written.
                // SAFETY: the VMCS is current on this CPU (preemption off).
                unsafe { rvmx_glue_active_vmcs_unload(v.vmcs.active.as_ptr()) };
                return Err(e);
            }
        }
        Ok(v)
    }
}

impl Drop for Vmcs {
    fn drop(&mut self) {
        // SAFETY: VMCLEARs the VMCS on the CPU that holds it (waiting for
        // it) and frees the record; the page is freed after this, when it
        // is active nowhere.
        unsafe { rvmx_glue_active_vmcs_free(self.active.as_ptr()) };
    }
}

/// The host state that differs from CPU to CPU (SDM Vol. 3C §25.5): the
/// GDT and TSS, the kernel's per-CPU GS base and SYSENTER stack. Written
/// when the VMCS arrives on a CPU, as KVM's vmx_vcpu_load_vmcs; HOST_FS_BASE
/// (the thread's), CR3 and CR4 are checked before each entry instead.
fn write_host_cpu_state(v: &mut Loaded<'_>) -> Result {
    v.write(fields::HOST_GDTR_BASE, Natural(hw::sgdt().base))?;
    v.write(fields::HOST_TR_BASE, Natural(hw::tss_base()))?;
    // SAFETY: (all reads) architectural MSRs present on every x86-64 CPU.
    unsafe {
        v.write(fields::HOST_GS_BASE, Natural(msr::rdmsr(msr::IA32_GS_BASE)))?;
        v.write(fields::HOST_IA32_SYSENTER_ESP, Natural(msr::rdmsr(msr::IA32_SYSENTER_ESP)))
    }
}

/// kglue/vmcs.c's VMCLEAR, on the CPU that holds the VMCS (an IPI, the
/// offline or reboot path, or the emergency path in NMI context: so no
/// logging here). 0, or -EIO if it failed (VMX already off).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vmclear(pa: u64) -> core::ffi::c_int {
    // SAFETY: kglue/vmcs.c passes the region of a live `Vmcs` that this
    // CPU holds active; a fault (VMX off) is caught.
    match unsafe { vmx::vmclear(Hpa(pa)) } {
        Ok(()) => 0,
        Err(_) => EIO.to_errno(),
    }
}

/// kglue/vmcs.c's VMPTRLD, from `Vmcs::load` (preemption off).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vmptrld(pa: u64) -> core::ffi::c_int {
    // SAFETY: the region of the `Vmcs` being loaded, which kglue/vmcs.c
    // has made sure is active on no other CPU.
    match unsafe { vmx::vmptrld(Hpa(pa)) } {
        Ok(()) => 0,
        Err(e) => {
            log_vmx_failure("VMPTRLD", e);
            EIO.to_errno()
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
/// thread cannot migrate. Dropping it re-enables preemption; the VMCS stays
/// active on this CPU (kglue/vmcs.c).
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

    /// Whether the VMCS was VMLAUNCHed on this CPU since it became active
    /// here: then the next entry is a VMRESUME (SDM Vol. 3C §25.11.3).
    pub(crate) fn launched(&self) -> bool {
        // SAFETY: the record of the current VMCS; preemption is off.
        unsafe { rvmx_glue_active_vmcs_launched(self.vmcs.active.as_ptr()) }
    }

    /// Records a successful VMLAUNCH (a VM exit that was not a failed entry).
    pub(crate) fn set_launched(&mut self) {
        // SAFETY: as `launched`.
        unsafe { rvmx_glue_active_vmcs_set_launched(self.vmcs.active.as_ptr()) }
    }

    /// The VM-instruction error number after a VMfailValid (SDM §31.4).
    pub(crate) fn instruction_error(&self) -> u32 {
        self.read(fields::VM_INSTRUCTION_ERROR)
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        // SAFETY: pairs with the disable in `Vmcs::load`.
        unsafe { rvmx_glue_preempt_enable() };
    }
}
