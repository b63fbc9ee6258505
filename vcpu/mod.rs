// SPDX-License-Identifier: GPL-2.0

//! A vCPU: its VMCS, the guest registers the VMCS does not hold, the pages
//! it shares with userspace (kvm_run, port-I/O data, rvmx's exit
//! information) and the run token that serializes everything done to it.
//! Beside it, one file per concept: `run.rs` (KVM_RUN: the run loop that
//! enters the guest and hands VM exits to exits/), `regs.rs` (the register,
//! MSR and CPUID ioctls), `setup.rs` (how the VMCS is filled in),
//! `events.rs` (interrupts and exceptions into the guest), `fpu.rs` (the
//! FPU/XSAVE ioctls).
//!
//! # When is the VMCS loaded?
//!
//! A VMCS may be active on one CPU at a time, and that CPU must VMCLEAR it
//! before another CPU loads it (SDM Vol. 3C §25.11). As in KVM, a vCPU's
//! VMCS stays *active* on the CPU it last ran on: every use (a guest
//! section, an ioctl that reads registers) makes it current with
//! `Vmcs::load`, which costs nothing when it already is, and preemption is
//! off only while it is in use (`vmcs::Loaded`). A guest section after an
//! exit to userspace, a sleep or a reschedule on the same CPU starts with a
//! VMRESUME and rewrites no host state. When the thread has moved, the load
//! has the old CPU VMCLEAR the VMCS (an IPI, waited for: kglue/vmcs.c, as
//! KVM's loaded_vmcs_clear), loads it here, writes this CPU's host state,
//! and the next entry is a VMLAUNCH. A CPU that leaves VMX operation
//! (offline, suspend, reboot, crash, unload) VMCLEARs every VMCS it holds
//! first, and a VMCS is VMCLEARed wherever it is before its page is freed.
//! A move also needs a flush of the vCPU's EPT and VPID contexts on the new
//! CPU, which may hold stale translations of them (vpid.rs, vm.rs
//! `RemoteFlush`), done at section start.
//!
//! Lock order: the run token, then `Vm::mem`.

mod events;
mod fpu;
mod regs;
mod run;
mod setup;

use crate::kglue::rvmx_glue_virt_to_page;
use events::{interruptible, update_interrupt_window, update_nmi_window};
use setup::{read_seg, reset_guest_state, setup_controls, setup_host_constant_state, write_pdptes, write_seg};

use crate::exits::{self, Action, Pending};
use crate::guest::{reg, Guest};
use crate::hw::{self, cr::*, msr};
use crate::kpage::KernelPage;
use crate::msrs::GuestMsrs;
use crate::uapi::{self, kvm_cpuid_entry2, kvm_regs, kvm_sregs, rvmx_exit_info, RunPage};
use crate::vm::{Fault, Vm};
use crate::vmcs::guest::{clear_interrupt_shadow, set_cr0, set_cr4, set_long_mode};
use crate::vmcs::{controls, fields::*, Loaded, Vmcs};
use crate::vmxon;
use crate::vpid::Vpid;
use core::cell::UnsafeCell;
use kernel::sync::Arc;
use kernel::{new_condvar, new_mutex, prelude::*, sync::{CondVar, Mutex}};


/// Pages of the vCPU mmap (uapi/rvmx.h).
const RUN_PAGE: usize = 0;
const PIO_PAGE: usize = uapi::KVM_PIO_PAGE_OFFSET as usize;
const INFO_PAGE: usize = uapi::RVMX_EXIT_INFO_PAGE_OFFSET as usize;
pub(crate) const MMAP_PAGES: usize = uapi::RVMX_VCPU_MMAP_PAGES as usize;

/// RFLAGS bit 1 is always 1.
/// `VcpuState::ept_gen` of a vCPU that has not flushed its EPT context on
/// the CPU it is on: never a VM's generation, which counts up from 0.
const EPT_NEVER_FLUSHED: u64 = u64::MAX;
const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_IF: u64 = 1 << 9;

/// Everything the run loop changes; owned by whoever holds the run token.
pub(crate) struct VcpuState {
    vmcs: Vmcs,
    /// General-purpose registers while the guest is not running (the RSP
    /// slot is unused: RSP lives in the VMCS).
    regs: [u64; 16],
    /// vmenter.S's cache of HOST_RSP (the VMCS field keeps its value across
    /// CPUs: VMCLEAR writes it to memory).
    host_rsp: u64,
    /// The host values checked before each entry (run.rs).
    host: run::HostCache,
    /// The guest's CR2, which VMX does not switch.
    cr2: u64,
    /// The guest's FPU/SSE/AVX state while it is not running.
    fpu: KernelPage,
    /// The MSR bitmap (msrs/); the CPU reads it by physical address.
    _msr_bitmap: KernelPage,
    /// Work left from the last exit to userspace (e.g. the data of an IN).
    pub(crate) pending: Pending,
    /// Bytes to advance RIP by at the next entry (an instruction that
    /// userspace completed, e.g. an MMIO access).
    pub(crate) rip_advance: u64,
    /// VM exits so far.
    exits: u64,
    /// The basic reason and host TSC of the last VM exit, until the next
    /// entry adds the time between them to the statistics (stats.rs).
    last_exit: Option<(u32, u64)>,
    pub(crate) guest: Guest,
    /// This vCPU's VPID (None: the CPU lacks VPIDs or all are taken).
    vpid: Option<Vpid>,
    /// The CPU the vCPU last ran on (VPID flushes, see vpid.rs).
    last_cpu: Option<u32>,
    /// The guest's linear translations must be flushed before it runs.
    flush_tlb: bool,
    /// The VM's EPT flush generation this vCPU last flushed at on
    /// `last_cpu` (vm.rs, `RemoteFlush`), or `EPT_NEVER_FLUSHED`.
    ept_gen: u64,
    /// Pages for the EPT tables the next fault may need (ept.rs): filled
    /// before the VM's memory lock, which must not allocate.
    ept_tables: crate::ept::TableCache,
    /// Whether KVM_RUN ran yet (KVM refuses a new CPUID table after that).
    ran: bool,
    /// Whether this KVM_RUN has written kvm_run's interrupt state yet (the
    /// end of every guest section does).
    run_state_published: bool,
    /// This vCPU's number for IBPB between vCPUs (kglue/run.c): unique for the
    /// module's lifetime, unlike a VMCS address, which may be reused.
    uid: u64,
    /// KVM_SET_SIGNAL_MASK's mask, in force during KVM_RUN.
    sigmask: Option<u64>,
    /// PDPTEs read for the guest's PAE paging, to write before the next
    /// entry (exits/cr.rs).
    pdptes: Option<[u64; 4]>,
}

/// Source of `VcpuState::uid` (0 is never used: it is what the per-CPU
/// "last vCPU" starts as).
static NEXT_VCPU_UID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// A vCPU.
///
/// # Invariants
///
/// `state` is accessed only by the thread that holds the run token
/// (`running` set under `token`).
#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    /// Holds `id` in the VM until the vCPU is freed.
    _id: crate::vm::VcpuId,
    /// The pages userspace maps (page N of the vCPU fd is `pages[N]`).
    pages: [KernelPage; MMAP_PAGES],
    /// IA32_VMX_BASIC[54] (see exits/io.rs).
    ins_outs_info: bool,
    /// The "virtual NMIs" control is on: NMIs can be injected (KVM_NMI).
    virtual_nmis: bool,
    /// Flush L1D before every VM entry (L1TF; caps.rs).
    l1d_flush: crate::caps::L1dFlush,
    /// Counters for KVM_GET_STATS_FD (stats.rs), written by the thread
    /// that holds the run token.
    stats: crate::stats::VcpuStats,
    #[pin]
    token: Mutex<bool>,
    #[pin]
    token_free: CondVar,
    state: UnsafeCell<VcpuState>,
}

// SAFETY: `state` is only accessed under the run token (type invariant);
// the rest is immutable or synchronized.
unsafe impl Sync for Vcpu {}
// SAFETY: as above.
unsafe impl Send for Vcpu {}

/// Holding the run token: exclusive access to the vCPU's state, like KVM's
/// vcpu->mutex. Released on drop.
struct RunToken<'a> {
    vcpu: &'a Vcpu,
}

impl Drop for RunToken<'_> {
    fn drop(&mut self) {
        *self.vcpu.token.lock() = false;
        self.vcpu.token_free.notify_one();
    }
}

impl RunToken<'_> {
    fn state(&mut self) -> &mut VcpuState {
        // SAFETY: we hold the token (type invariant of `Vcpu`), and
        // `&mut self` makes this the only reference.
        unsafe { &mut *self.vcpu.state.get() }
    }
}

impl Vcpu {
    /// KVM_CREATE_VCPU: a vCPU in the reset state (real mode at F000:FFF0).
    pub(crate) fn new(vcpu_id: crate::vm::VcpuId) -> Result<Arc<Self>> {
        let (vm, id) = (vcpu_id.vm().clone(), vcpu_id.get());
        let caps = vmxon::caps().ok_or(EIO)?;
        // The guest's XSAVE image lives in one page.
        if hw::xsave_size() > 4096 {
            pr_err!("XSAVE area larger than a page is not supported\n");
            return Err(crate::caps::eopnotsupp());
        }
        let fpu = KernelPage::new()?;
        // An XSAVE image whose header says "everything in its initial
        // state", with MXCSR at its reset value 0x1f80 (MXCSR is loaded
        // from the legacy area regardless).
        // SAFETY: offset 24 of the page is MXCSR's place in the image.
        unsafe { fpu.as_ptr::<u8>().add(24).cast::<u32>().write(0x1f80) };
        let pages = [KernelPage::new()?, KernelPage::new()?, KernelPage::new()?, KernelPage::new()?];
        let msr_bitmap = KernelPage::new()?;
        let vpid = if caps.vpid_usable() { Vpid::alloc() } else { None };
        let pat_exit = controls::exit::SAVE_IA32_PAT | controls::exit::LOAD_IA32_PAT;
        let pat_in_vmcs = caps.exit.may_be_one & pat_exit == pat_exit && caps.entry.allows(controls::entry::LOAD_IA32_PAT);
        let msrs = GuestMsrs::new(id, pat_in_vmcs)?;
        // SAFETY: the page is ours, 4096 bytes, and not yet shared.
        crate::msrs::fill_bitmap(unsafe { &mut *msr_bitmap.as_ptr::<[u8; 4096]>() }, msrs.deferred_count);
        let bitmap_pa = msr_bitmap.phys();
        let mut state = VcpuState {
            vmcs: Vmcs::new(caps.revision_id)?,
            regs: [0; 16],
            host_rsp: 0,
            host: run::HostCache { cr3: 0, cr4: 0, fs_base: None },
            cr2: 0,
            fpu,
            _msr_bitmap: msr_bitmap,
            pending: Pending::None,
            rip_advance: 0,
            exits: 0,
            last_exit: None,
            guest: Guest {
                msrs,
                cr8: 0,
                xcr0: 1,
                cpuid: KVec::new(),
                irq: None,
                want_irq_window: false,
                irq_window_exiting: false,
                nmi_pending: 0,
                nmi_window_exiting: false,
                vpid: 0,
                debug: crate::guest::DebugRegs::RESET,
                host_xcr0: hw::xcr0(),
                xfeatures: hw::xcr0() & !hw::cr::XFEATURE_PKRU,
            },
            vpid,
            last_cpu: None,
            flush_tlb: true,
            ept_gen: EPT_NEVER_FLUSHED,
            ept_tables: crate::ept::TableCache::new(),
            ran: false,
            run_state_published: false,
            uid: NEXT_VCPU_UID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            sigmask: None,
            pdptes: None,
        };
        // KVM's reset value of RDX: the CPU signature (family 6).
        state.regs[reg::RDX] = 0x600;
        state.guest.vpid = state.vpid.as_ref().map_or(0, |v| v.get());
        {
            let mut v = state.vmcs.load()?;
            setup_controls(&mut v, &caps, vm.eptp(), bitmap_pa, state.vpid.as_ref().map(|v| v.get()))?;
            setup_host_constant_state(&mut v)?;
            reset_guest_state(&mut v, &caps)?;
        }
        let vcpu = Arc::pin_init(
            pin_init!(Vcpu {
                vm,
                id,
                _id: vcpu_id,
                pages,
                ins_outs_info: caps.ins_outs_info,
                virtual_nmis: caps.virtual_nmis(),
                l1d_flush: caps.l1d_flush,
                stats: crate::stats::VcpuStats::new(),
                token <- new_mutex!(false, "rvmx:vcpu.token"),
                token_free <- new_condvar!("rvmx:vcpu.token_free"),
                state: UnsafeCell::new(state),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(vcpu)
    }

    pub(crate) fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn stats(&self) -> &crate::stats::VcpuStats {
        &self.stats
    }

    /// The struct page of mmap page `index` (for kglue/files.c's mmap), or null.
    pub(crate) fn mmap_page(&self, index: usize) -> *mut crate::kglue::page {
        match self.pages.get(index) {
            // SAFETY: a direct-map address of a page we own.
            Some(p) => unsafe { rvmx_glue_virt_to_page(p.as_ptr()) },
            None => core::ptr::null_mut(),
        }
    }

    /// The run page shared with userspace (uapi/run.rs: volatile access only).
    fn run_page(&self) -> RunPage {
        // SAFETY: page RUN_PAGE is the vCPU's run page and lives as long as
        // the vCPU, which outlives every use of the value.
        unsafe { RunPage::new(self.pages[RUN_PAGE].as_ptr()) }
    }

    /// Takes the run token, waiting (interruptibly) while another thread
    /// holds it, as KVM's vcpu->mutex does.
    fn token(&self) -> Result<RunToken<'_>> {
        let mut busy = self.token.lock();
        while *busy {
            if self.token_free.wait_interruptible(&mut busy) {
                // A signal ended the wait. If a release woke this thread
                // (notify_one wakes one waiter), the token may be free now:
                // pass the wake-up on, or another waiter sleeps for ever.
                if !*busy {
                    self.token_free.notify_one();
                }
                return Err(EINTR);
            }
        }
        *busy = true;
        Ok(RunToken { vcpu: self })
    }

}

impl VcpuState {
    /// Lends exits/ what the second half of an exit works on (registers,
    /// pending work, the VMCS, guest memory), outside the guest section.
    pub(crate) fn emul<'a>(&'a mut self, vm: &'a Vm, run: RunPage, pio: uapi::PioPage) -> exits::EmulCtx<'a> {
        exits::EmulCtx {
            vmcs: &mut self.vmcs,
            regs: &mut self.regs,
            cr2: &mut self.cr2,
            pending: &mut self.pending,
            rip_advance: &mut self.rip_advance,
            vm,
            run,
            pio,
        }
    }
}
