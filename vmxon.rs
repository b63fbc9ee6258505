// SPDX-License-Identifier: GPL-2.0

//! VMX root operation on every CPU: one VMXON region per CPU, CR4.VMXE set
//! through the kernel's CR4 shadow, VMXON when a CPU comes online (and at
//! load, on every CPU already online), VMXOFF when it goes offline, at
//! reboot, and from the kernel's emergency (crash/kexec) callback.
//!
//! Who runs what, where:
//! - `rvmx_cpu_online`/`rvmx_cpu_offline` are CPU-hotplug callbacks: the
//!   kernel runs each on the CPU concerned, in that CPU's hotplug thread.
//!   `cpuhp_setup_state()` rolls back (offline on every CPU that succeeded)
//!   if any CPU fails, so the module load fails with nothing left in VMX.
//! - `rvmx_reboot` runs from the reboot notifier and VMXOFFs every CPU.
//! - `rvmx_emergency_vmxoff` runs in NMI context on each CPU when the
//!   kernel crashes or restarts in an emergency.

use crate::addr::Hpa;
use crate::kglue::{
    rvmx_glue_cpuhp_remove, rvmx_glue_cpuhp_setup, rvmx_glue_nr_cpu_ids, rvmx_glue_on_each_cpu,
    rvmx_glue_page_to_phys, rvmx_glue_raw_cpu_id,
};
use crate::caps::VmxCaps;
use crate::hw::{self, cr::CR4_VMXE, vmx};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use kernel::{alloc::flags, page::Page, prelude::*};

/// One CPU's VMX root state.
struct CpuVmx {
    /// The VMXON region: a zeroed page starting with the VMCS revision id.
    /// While `in_vmx` is true the CPU owns it; rvmx only keeps it alive.
    _region: Page,
    region_pa: Hpa,
    /// Whether this CPU is in VMX root operation because of rvmx. Written
    /// only on this CPU; read from NMI context on this CPU.
    in_vmx: AtomicBool,
}

/// VMX root state of every possible CPU, indexed by CPU number.
///
/// # Invariants
///
/// While registered (see `VmxRoot`), `RVMX_ROOT` points at this value and
/// the hotplug, reboot and emergency callbacks may use it.
struct PerCpuVmx {
    caps: VmxCaps,
    cpus: KVec<CpuVmx>,
}

/// The state the kernel's callbacks find; null when rvmx is not in VMX root.
static RVMX_ROOT: AtomicPtr<PerCpuVmx> = AtomicPtr::new(core::ptr::null_mut());

/// Set once the machine is going down: no CPU enters VMX after that.
static REBOOTING: AtomicBool = AtomicBool::new(false);

/// Owns VMX root operation: while a `VmxRoot` exists every online CPU is in
/// VMX root operation; dropping it leaves VMX on every CPU.
pub(crate) struct VmxRoot {
    state: KBox<PerCpuVmx>,
    cpuhp_state: core::ffi::c_int,
}

impl VmxRoot {
    /// Allocates the VMXON regions and enters VMX root operation on every
    /// online CPU (and on every CPU that comes online later).
    pub(crate) fn enable(caps: VmxCaps) -> Result<Self> {
        // SAFETY: reads a kernel variable fixed at boot.
        let nr_cpus = unsafe { rvmx_glue_nr_cpu_ids() } as usize;
        let mut cpus = KVec::with_capacity(nr_cpus, flags::GFP_KERNEL)?;
        for _ in 0..nr_cpus {
            let region = Page::alloc_page(flags::GFP_KERNEL | flags::__GFP_ZERO)?;
            // SAFETY: `region` owns a valid page; the 4 bytes are in bounds.
            unsafe { region.write_raw(caps.revision_id.to_ne_bytes().as_ptr(), 0, 4)? };
            // SAFETY: `as_ptr()` is a valid struct page owned by `region`.
            let region_pa = Hpa(unsafe { rvmx_glue_page_to_phys(region.as_ptr().cast()) });
            cpus.push(CpuVmx { _region: region, region_pa, in_vmx: AtomicBool::new(false) }, flags::GFP_KERNEL)?;
        }
        let mut state = KBox::new(PerCpuVmx { caps, cpus }, flags::GFP_KERNEL)?;

        REBOOTING.store(false, Ordering::Relaxed);
        // SAFETY: no CPU is in VMX operation by rvmx yet: the per-CPU lists
        // of active VMCSs start empty.
        unsafe { crate::kglue::rvmx_glue_active_vmcs_init() };
        RVMX_ROOT.store(&mut *state, Ordering::Release);
        // SAFETY: `RVMX_ROOT` is valid (set above) for the callbacks this
        // registers; they are removed in `drop` before `state` is freed.
        let r = unsafe { rvmx_glue_cpuhp_setup() };
        if r < 0 {
            // cpuhp_setup_state() has already run the offline callback on
            // every CPU that had entered VMX.
            RVMX_ROOT.store(core::ptr::null_mut(), Ordering::Release);
            return Err(Error::from_errno(r));
        }
        Ok(Self { state, cpuhp_state: r })
    }

    /// The number of CPUs now in VMX root operation because of rvmx.
    pub(crate) fn cpus_in_vmx(&self) -> usize {
        self.state.cpus.iter().filter(|c| c.in_vmx.load(Ordering::Relaxed)).count()
    }
}

impl Drop for VmxRoot {
    fn drop(&mut self) {
        // Runs `rvmx_cpu_offline` on every online CPU, which leaves VMX.
        // SAFETY: `cpuhp_state` came from a successful setup.
        unsafe { rvmx_glue_cpuhp_remove(self.cpuhp_state) };
        RVMX_ROOT.store(core::ptr::null_mut(), Ordering::Release);
        // `state` (and with it every VMXON region) is freed after this:
        // no CPU is in VMX operation any more, so none still owns a region.
    }
}

/// The capabilities probed at load (for VM and vCPU setup), or `None`
/// outside the module's VMX lifetime or while the machine reboots.
pub(crate) fn caps() -> Option<VmxCaps> {
    if REBOOTING.load(Ordering::Acquire) {
        return None;
    }
    let p = RVMX_ROOT.load(Ordering::Acquire);
    // SAFETY: as in `this_cpu`: non-null means live until the module's
    // `VmxRoot` is dropped, which cannot happen while a file of ours is
    // open (each holds a module reference).
    unsafe { p.as_ref() }.map(|r| r.caps)
}

/// Why a CPU could not enter VMX root operation.
fn refuse(cpu: u32, why: &str, err: Error) -> core::ffi::c_int {
    pr_err!("CPU{}: cannot enter VMX root operation: {}\n", cpu, why);
    err.to_errno()
}

/// The state of the CPU we run on, if rvmx is enabled.
///
/// Returns `None` outside `VmxRoot`'s lifetime.
fn this_cpu() -> Option<(&'static PerCpuVmx, &'static CpuVmx)> {
    let p = RVMX_ROOT.load(Ordering::Acquire);
    // SAFETY: by `PerCpuVmx`'s invariant a non-null `RVMX_ROOT` points at a
    // live value, which outlives every callback that can observe it (the
    // callbacks are unregistered before it is freed).
    let root = unsafe { p.as_ref() }?;
    // SAFETY: reads this CPU's number; callers run pinned to the CPU.
    let cpu = unsafe { rvmx_glue_raw_cpu_id() } as usize;
    Some((root, root.cpus.get(cpu)?))
}

/// CPU-hotplug "online" callback: enter VMX root operation on this CPU.
#[no_mangle]
pub(crate) extern "C" fn rvmx_cpu_online(cpu: u32) -> core::ffi::c_int {
    let Some((root, me)) = this_cpu() else { return 0 };
    if REBOOTING.load(Ordering::Acquire) {
        return 0;
    }
    crate::msrs::cpu_online();
    // Another hypervisor already owns VMX on this CPU: its VMXON region is in
    // use, and a second VMXON would fail (or, worse, succeed in its context).
    if hw::cr4_shadow() & CR4_VMXE != 0 {
        return refuse(cpu, "CR4.VMXE is already set: another hypervisor (e.g. kvm_intel) is using VMX", EBUSY);
    }
    // VMXON requires CR0 to hold the bits IA32_VMX_CR0_FIXED0 fixes to 1
    // (PE, NE, PG); Linux runs with them set, so this only catches surprises.
    let cr0 = hw::read_cr0();
    if cr0 & root.caps.cr0_fixed0 != root.caps.cr0_fixed0 || cr0 & !root.caps.cr0_fixed1 != 0 {
        return refuse(cpu, "CR0 does not meet IA32_VMX_CR0_FIXED0/1", EIO);
    }
    hw::cr4_set_vmxe();
    let cr4 = hw::cr4_raw();
    if cr4 & root.caps.cr4_fixed0 != root.caps.cr4_fixed0 || cr4 & !root.caps.cr4_fixed1 != 0 {
        hw::cr4_clear_vmxe();
        return refuse(cpu, "CR4 does not meet IA32_VMX_CR4_FIXED0/1", EIO);
    }
    // SAFETY: the region is this CPU's own page, holding the revision id and
    // kept until after VMXOFF (`VmxRoot::drop`); CR4.VMXE is set; we run in
    // this CPU's hotplug thread, pinned to it.
    match unsafe { vmx::vmxon(me.region_pa) } {
        Ok(()) => {
            // This CPU may cache EPT translations from before: from when it
            // went offline, or from an earlier VMX user (KVM) whose EPT
            // root page rvmx may reuse. Drop them all, as KVM does at
            // VMXON; vCPUs also flush their own on arrival (vm.rs,
            // `RemoteFlush`), which covers CPUs without all-context INVEPT.
            if root.caps.ept_vpid & crate::caps::EPT_INVEPT_ALL != 0 && vmx::invept_global().is_err() {
                pr_warn!("CPU{}: INVEPT all-context failed\n", cpu);
            }
            me.in_vmx.store(true, Ordering::Release);
            0
        }
        Err(e) => {
            hw::cr4_clear_vmxe();
            pr_err!("CPU{}: VMXON failed: {:?}\n", cpu, e);
            EIO.to_errno()
        }
    }
}

/// Leaves VMX root operation on this CPU if rvmx put it there, VMCLEARing
/// first every VMCS it holds active (kglue/vmcs.c): their state goes to
/// memory, and their vCPUs load them on another CPU with VMLAUNCH.
fn leave_vmx(me: &CpuVmx) {
    // SAFETY: this CPU's list; if VMX is off here already (a VMXON that
    // failed), the VMCLEARs fault, caught, and the list is emptied anyway.
    unsafe { crate::kglue::rvmx_glue_vmclear_local() };
    if me.in_vmx.swap(false, Ordering::AcqRel) {
        // VMXOFF cannot fail in VMX root operation outside SMX (SDM Vol. 3C
        // §31.3, "VMXOFF"); were it to fault, VMX is off all the same.
        let _ = vmx::vmxoff();
        hw::cr4_clear_vmxe();
    }
}

/// CPU-hotplug "offline" callback: leave VMX root operation on this CPU.
#[no_mangle]
pub(crate) extern "C" fn rvmx_cpu_offline(_cpu: u32) -> core::ffi::c_int {
    if let Some((_, me)) = this_cpu() {
        leave_vmx(me);
        crate::msrs::cpu_offline();
    }
    0
}

/// Suspend (syscore callback, on the last CPU up, interrupts off): leave
/// VMX on this CPU, VMCLEARing the VMCSs it holds (every task is frozen by
/// now, so none is current in a guest section).
#[no_mangle]
pub(crate) extern "C" fn rvmx_cpu_suspend() -> core::ffi::c_int {
    if let Some((_, me)) = this_cpu() {
        if me.in_vmx.load(Ordering::Acquire) {
            // SAFETY: reads this CPU's number.
            pr_info!("CPU{}: leaving VMX operation for suspend\n", unsafe { rvmx_glue_raw_cpu_id() });
        }
        leave_vmx(me);
        crate::msrs::cpu_offline();
    }
    0
}

/// Resume (syscore callback, on the first CPU up, interrupts off): enter
/// VMX again, as at load. A failure is logged; that CPU then runs no
/// guest (a VM entry there fails, and the guest's KVM_RUN says so).
#[no_mangle]
pub(crate) extern "C" fn rvmx_cpu_resume() {
    // SAFETY: reads this CPU's number.
    let cpu = unsafe { rvmx_glue_raw_cpu_id() };
    if rvmx_cpu_online(cpu) == 0 && this_cpu().is_some_and(|(_, me)| me.in_vmx.load(Ordering::Acquire)) {
        pr_info!("CPU{}: back in VMX operation after resume\n", cpu);
    }
}

/// Reboot notifier: leave VMX on every CPU, so that firmware (and the next
/// kernel) can send INIT to the application processors, which VMX root
/// operation blocks.
#[no_mangle]
pub(crate) extern "C" fn rvmx_reboot() {
    REBOOTING.store(true, Ordering::Release);
    pr_info!("leaving VMX operation for reboot\n");
    extern "C" fn off(_: *mut core::ffi::c_void) {
        rvmx_cpu_offline(0);
    }
    // SAFETY: `off` only touches the calling CPU's state, so it may run in
    // IPI context on every CPU; the call returns once all CPUs ran it.
    unsafe { rvmx_glue_on_each_cpu(Some(off), core::ptr::null_mut()) };
}

/// The kernel's emergency virtualization callback (crash, kexec-on-panic,
/// emergency restart): runs in NMI context on each CPU.
///
/// The NMI may have interrupted `leave_vmx` on this CPU between clearing
/// `in_vmx` and VMXOFF, so this path trusts only CR4.VMXE (as KVM's does):
/// while rvmx is loaded, VMXE is set only by rvmx, and a VMXOFF outside VMX
/// operation is caught by its exception-table entry instead of oopsing.
#[no_mangle]
pub(crate) extern "C" fn rvmx_emergency_vmxoff() {
    if hw::cr4_raw() & CR4_VMXE == 0 {
        return;
    }
    if let Some((_, me)) = this_cpu() {
        me.in_vmx.store(false, Ordering::Release);
    }
    // The guests' state to memory, for a kdump kernel to find (a VMCLEAR
    // that faults is caught).
    // SAFETY: walks this CPU's list without changing it (NMI context).
    unsafe { crate::kglue::rvmx_glue_vmclear_local_emergency() };
    let _ = vmx::vmxoff();
    hw::cr4_clear_vmxe();
}
