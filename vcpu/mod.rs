// SPDX-License-Identifier: GPL-2.0

//! A vCPU: its VMCS, the guest registers the VMCS does not hold, the pages
//! it shares with userspace (kvm_run, port-I/O data, rvmx's exit
//! information), its register and MSR/CPUID ioctls, and the run loop that
//! enters the guest and handles VM exits. Beside it: `setup.rs` (how the
//! VMCS is filled in), `events.rs` (interrupts and exceptions into the
//! guest), `fpu.rs` (the FPU/XSAVE ioctls).
//!
//! # When is the VMCS loaded?
//!
//! A VMCS may be active on one CPU at a time, and a CPU must VMCLEAR it
//! before another CPU loads it. rvmx keeps this simple: the VMCS is made
//! current (VMPTRLD) at the start of a *guest section* and VMCLEARed at its
//! end, and preemption is disabled in between (`vmcs::Loaded`). Inside a
//! section the vCPU thread cannot migrate, so every entry after the first is
//! a cheap VMRESUME; a section ends only when the run loop must return to
//! userspace, sleep (to map memory), or let the scheduler run. So a VMCS is
//! never active on a CPU that the thread has left, nor on a CPU going
//! offline, and no cross-CPU VMCLEAR is ever needed. (KVM instead keeps a
//! VMCS loaded across preemption and uses preempt notifiers to VMCLEAR it
//! on the old CPU by IPI when the thread moves; rvmx pays a VMCLEAR and
//! VMPTRLD per section for not needing any of that.) What a move does
//! need is a VPID flush on the new CPU (vpid.rs), done at section start.
//!
//! Lock order: the run token, then `Vm::mem`.

mod events;
mod fpu;
mod setup;

pub(crate) use events::{clear_interrupt_shadow, set_irq_window_exiting, set_nmi_blocking, set_nmi_window_exiting};
pub(crate) use setup::{pae_paging, set_cr0, set_cr4, set_long_mode};
use events::{interruptible, update_interrupt_window, update_nmi_window};
use setup::{read_seg, reset_guest_state, setup_controls, setup_host_constant_state, setup_host_cpu_state, write_pdptes, write_seg};

use crate::exits::{self, Action, Pending};
use crate::hw::{self, cr::*, msr};
use crate::kpage::KernelPage;
use crate::msrs::GuestMsrs;
use crate::uapi::{self, kvm_cpuid_entry2, kvm_regs, kvm_sregs, rvmx_exit_info, RunPage};
use crate::vm::{Fault, Vm};
use crate::vmcs::{controls, fields::*, Loaded, Vmcs};
use crate::vmxon;
use crate::vpid::Vpid;
use core::cell::UnsafeCell;
use kernel::sync::Arc;
use kernel::{new_condvar, new_mutex, prelude::*, sync::{CondVar, Mutex}};

extern "C" {
    fn rvmx_vmenter(regs: *mut u64, resume: u32, host_rsp: *mut u64) -> i32;
    fn rvmx_glue_irq_disable();
    fn rvmx_glue_irq_enable();
    fn rvmx_glue_need_resched() -> bool;
    fn rvmx_glue_cond_resched();
    fn rvmx_glue_signal_pending() -> bool;
    fn rvmx_glue_softirq_pending() -> bool;
    fn rvmx_glue_restore_host_breakpoints();
    fn rvmx_glue_ibpb_on_vcpu_switch(uid: u64);
    fn rvmx_glue_save_host_segments(s: *mut HostSegments);
    fn rvmx_glue_restore_host_segments(s: *const HostSegments);
    fn rvmx_glue_fpu_begin();
    fn rvmx_glue_fpu_end();
    fn rvmx_glue_restore_host_descriptor_limits();
    fn rvmx_glue_virt_to_page(addr: *mut core::ffi::c_void) -> *mut core::ffi::c_void;
    fn rvmx_glue_raw_cpu_id() -> u32;
    fn rvmx_glue_sigmask_activate(mask: *const u64);
    fn rvmx_glue_sigmask_deactivate();
}

/// Indices into `regs`, in KVM's (and vmenter.S's) order.
pub(crate) mod reg {
    pub(crate) const RAX: usize = 0;
    pub(crate) const RCX: usize = 1;
    pub(crate) const RDX: usize = 2;
    pub(crate) const RBX: usize = 3;
    pub(crate) const RSP: usize = 4;
    pub(crate) const RSI: usize = 6;
    pub(crate) const RDI: usize = 7;
}

/// Pages of the vCPU mmap (uapi/rvmx.h).
const RUN_PAGE: usize = 0;
const PIO_PAGE: usize = uapi::KVM_PIO_PAGE_OFFSET as usize;
const INFO_PAGE: usize = uapi::RVMX_EXIT_INFO_PAGE_OFFSET as usize;
pub(crate) const MMAP_PAGES: usize = uapi::RVMX_VCPU_MMAP_PAGES as usize;

/// RFLAGS bit 1 is always 1.
const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_IF: u64 = 1 << 9;
/// The guest state that neither the VMCS nor `regs` holds, which exit
/// handlers and ioctls use.
pub(crate) struct Guest {
    pub(crate) msrs: GuestMsrs,
    /// CR8, the task priority: kept, not acted on (no local APIC).
    pub(crate) cr8: u64,
    /// The guest's XCR0 (set by XSETBV, exits/xsetbv.rs); loaded into the
    /// CPU while the guest runs.
    pub(crate) xcr0: u64,
    /// The table of KVM_SET_CPUID2; empty until then (exits/cpuid.rs).
    pub(crate) cpuid: KVec<kvm_cpuid_entry2>,
    /// An interrupt vector queued by KVM_INTERRUPT, not yet injected.
    pub(crate) irq: Option<u8>,
    /// kvm_run.request_interrupt_window, read at KVM_RUN.
    pub(crate) want_irq_window: bool,
    /// Whether "interrupt-window exiting" is on in the VMCS.
    pub(crate) irq_window_exiting: bool,
    /// NMIs queued by KVM_NMI, not yet injected (at most 2).
    pub(crate) nmi_pending: u8,
    /// Whether "NMI-window exiting" is on in the VMCS.
    pub(crate) nmi_window_exiting: bool,
    /// The vCPU's VPID, or 0 if it has none (vpid.rs).
    pub(crate) vpid: u16,
    /// The guest's DR0-3, DR6 and DR7, as MOV DR sees them (exits/dr.rs).
    pub(crate) debug: exits::dr::DebugRegs,
    /// The host's XCR0 (read at creation, in the host's context), put back
    /// when a guest section ends.
    pub(crate) host_xcr0: u64,
    /// The state components the guest's XSAVE image holds, and the most a
    /// guest may enable in XCR0: the host's, less PKRU. VMX does not switch
    /// PKRU, and Linux does not restore it on the way back to user mode, so
    /// a guest value loaded by XRSTOR would become the VMM's protection
    /// keys (rvmx gives guests no protection keys: CR4.PKE is refused).
    pub(crate) xfeatures: u64,
}

/// Everything the run loop changes; owned by whoever holds the run token.
pub(crate) struct VcpuState {
    vmcs: Vmcs,
    /// General-purpose registers while the guest is not running (the RSP
    /// slot is unused: RSP lives in the VMCS).
    regs: [u64; 16],
    /// vmenter.S's cache of HOST_RSP (reset whenever the VMCS is reloaded).
    host_rsp: u64,
    /// The guest's CR2, which VMX does not switch.
    cr2: u64,
    /// The guest's FPU/SSE/AVX state while it is not running.
    fpu: KernelPage,
    /// The MSR bitmap (msrs.rs); the CPU reads it by physical address.
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
    /// Pages for the EPT tables the next fault may need (ept.rs): filled
    /// before the VM's memory lock, which must not allocate.
    ept_tables: crate::ept::TableCache,
    /// Whether KVM_RUN ran yet (KVM refuses a new CPUID table after that).
    ran: bool,
    /// This vCPU's number for IBPB between vCPUs (kglue.c): unique for the
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

/// kglue.h `struct rvmx_host_segments`: the VMM's FS/GS selectors, LDTR
/// and FS base, which a VM exit does not keep.
#[repr(C)]
#[derive(Default)]
struct HostSegments {
    fs: u16,
    gs: u16,
    ldt: u16,
    fs_base: u64,
}

/// The cached host values vmenter.S's caller refreshes when they change.
struct HostCache {
    cr3: u64,
    cr4: u64,
}

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
    pub(crate) fn new(vm: Arc<Vm>, id: u32) -> Result<Arc<Self>> {
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
        let msrs = GuestMsrs::new(id, pat_in_vmcs);
        // SAFETY: the page is ours, 4096 bytes, and not yet shared.
        crate::msrs::fill_bitmap(unsafe { &mut *msr_bitmap.as_ptr::<[u8; 4096]>() }, msrs.swap_count);
        let bitmap_pa = msr_bitmap.phys();
        let mut state = VcpuState {
            vmcs: Vmcs::new(caps.revision_id)?,
            regs: [0; 16],
            host_rsp: 0,
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
                debug: exits::dr::DebugRegs::RESET,
                host_xcr0: hw::xcr0(),
                xfeatures: hw::xcr0() & !hw::cr::XFEATURE_PKRU,
            },
            vpid,
            last_cpu: None,
            flush_tlb: true,
            ept_tables: crate::ept::TableCache::new(),
            ran: false,
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
                pages,
                ins_outs_info: caps.ins_outs_info,
                virtual_nmis: caps.virtual_nmis(),
                l1d_flush: caps.l1d_flush,
                stats: crate::stats::VcpuStats::new(),
                token <- new_mutex!(false, "rvmx:vcpu.token"),
                token_free <- new_condvar!("rvmx:vcpu.token_free"),
                state: UnsafeCell::new(state),
            }),
            GFP_KERNEL,
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

    /// The struct page of mmap page `index` (for kglue.c's mmap), or null.
    pub(crate) fn mmap_page(&self, index: usize) -> *mut core::ffi::c_void {
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

    /// KVM_GET_REGS.
    pub(crate) fn get_regs(&self) -> Result<kvm_regs> {
        let mut t = self.token()?;
        let st = t.state();
        let r = st.regs;
        let v = st.vmcs.load()?;
        Ok(kvm_regs {
            rax: r[0], rcx: r[1], rdx: r[2], rbx: r[3],
            rsp: v.read(GUEST_RSP).0, rbp: r[5], rsi: r[6], rdi: r[7],
            r8: r[8], r9: r[9], r10: r[10], r11: r[11],
            r12: r[12], r13: r[13], r14: r[14], r15: r[15],
            rip: v.read(GUEST_RIP).0, rflags: v.read(GUEST_RFLAGS).0,
        })
    }

    /// KVM_SET_REGS.
    pub(crate) fn set_regs(&self, n: &kvm_regs) -> Result {
        let mut t = self.token()?;
        let st = t.state();
        st.regs = [
            n.rax, n.rcx, n.rdx, n.rbx, 0, n.rbp, n.rsi, n.rdi,
            n.r8, n.r9, n.r10, n.r11, n.r12, n.r13, n.r14, n.r15,
        ];
        // New registers override whatever the last exit left to complete.
        st.pending = Pending::None;
        st.rip_advance = 0;
        let mut v = st.vmcs.load()?;
        v.write(GUEST_RSP, Natural(n.rsp))?;
        v.write(GUEST_RIP, Natural(n.rip))?;
        v.write(GUEST_RFLAGS, Natural(n.rflags | RFLAGS_FIXED))
    }

    /// KVM_GET_SREGS.
    pub(crate) fn get_sregs(&self) -> Result<kvm_sregs> {
        let mut t = self.token()?;
        let st = t.state();
        let cr2 = st.cr2;
        let (cr8, apic_base, irq) = (st.guest.cr8, st.guest.msrs.apic_base, st.guest.irq);
        let v = st.vmcs.load()?;
        // SAFETY: all-zero is a valid `kvm_sregs` (plain integers).
        let mut s: kvm_sregs = unsafe { core::mem::zeroed() };
        s.cs = read_seg(&v, &GUEST_CS);
        s.ds = read_seg(&v, &GUEST_DS);
        s.es = read_seg(&v, &GUEST_ES);
        s.fs = read_seg(&v, &GUEST_FS);
        s.gs = read_seg(&v, &GUEST_GS);
        s.ss = read_seg(&v, &GUEST_SS);
        s.tr = read_seg(&v, &GUEST_TR);
        s.ldt = read_seg(&v, &GUEST_LDTR);
        s.gdt.base = v.read(GUEST_GDTR_BASE).0;
        // CAST: descriptor-table limits are 16 bits.
        s.gdt.limit = v.read(GUEST_GDTR_LIMIT) as u16;
        s.idt.base = v.read(GUEST_IDTR_BASE).0;
        s.idt.limit = v.read(GUEST_IDTR_LIMIT) as u16;
        s.cr0 = v.guest_cr0();
        s.cr2 = cr2;
        s.cr3 = v.read(GUEST_CR3).0;
        s.cr4 = v.guest_cr4();
        s.efer = v.read(GUEST_IA32_EFER);
        s.cr8 = cr8;
        s.apic_base = apic_base;
        // A queued, not yet injected interrupt is reported here, as KVM does.
        if let Some(vector) = irq {
            s.interrupt_bitmap[usize::from(vector / 64)] |= 1 << (vector % 64);
        }
        Ok(s)
    }

    /// KVM_SET_SREGS, refusing what KVM's kvm_valid_sregs() refuses.
    pub(crate) fn set_sregs(&self, s: &kvm_sregs) -> Result {
        let caps = vmxon::caps().ok_or(EIO)?;
        let long = s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0;
        if long && (s.cr4 & CR4_PAE == 0 || s.efer & EFER_LMA == 0) {
            return Err(EINVAL);
        }
        if !long && s.efer & EFER_LMA != 0 {
            return Err(EINVAL);
        }
        if (s.cr0 & CR0_PG != 0 && s.cr0 & CR0_PE == 0) || (s.cr0 & CR0_NW != 0 && s.cr0 & CR0_CD == 0) {
            return Err(EINVAL);
        }
        if s.cr4 & (CR4_VMXE | CR4_NOT_VIRTUALIZED) != 0 || s.cr4 & !caps.cr4_fixed1 != 0 || s.cr0 >> 32 != 0 {
            return Err(EINVAL);
        }
        // 32-bit PAE paging: the PDPTEs come from guest memory now, as
        // KVM loads them (invalid ones: EINVAL).
        let pdptes = if s.cr0 & CR0_PG != 0 && s.cr4 & CR4_PAE != 0 && !long {
            Some(self.vm.read_pdptes(s.cr3).ok().flatten().ok_or(EINVAL)?)
        } else {
            None
        };
        if s.cr8 >> 4 != 0 || s.apic_base & 0xfff0_0000_0000_02ff != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let st = t.state();
        st.cr2 = s.cr2;
        st.guest.cr8 = s.cr8;
        st.guest.msrs.apic_base = s.apic_base;
        // The first set bit of interrupt_bitmap, if any, is queued as an
        // interrupt, as KVM's __set_sregs_common does (none: no change).
        if let Some((i, w)) = s.interrupt_bitmap.iter().enumerate().find(|(_, w)| **w != 0) {
            // CAST: at most 4 * 64 = 256 vectors.
            st.guest.irq = Some((i * 64 + w.trailing_zeros() as usize) as u8);
        }
        // New paging registers: cached translations of the old ones must go.
        st.flush_tlb = true;
        let mut v = st.vmcs.load()?;
        write_seg(&mut v, &GUEST_CS, &s.cs)?;
        write_seg(&mut v, &GUEST_DS, &s.ds)?;
        write_seg(&mut v, &GUEST_ES, &s.es)?;
        write_seg(&mut v, &GUEST_FS, &s.fs)?;
        write_seg(&mut v, &GUEST_GS, &s.gs)?;
        write_seg(&mut v, &GUEST_SS, &s.ss)?;
        write_seg(&mut v, &GUEST_TR, &s.tr)?;
        write_seg(&mut v, &GUEST_LDTR, &s.ldt)?;
        v.write(GUEST_GDTR_BASE, Natural(s.gdt.base))?;
        v.write(GUEST_GDTR_LIMIT, u32::from(s.gdt.limit))?;
        v.write(GUEST_IDTR_BASE, Natural(s.idt.base))?;
        v.write(GUEST_IDTR_LIMIT, u32::from(s.idt.limit))?;
        v.write(GUEST_CR3, Natural(s.cr3))?;
        set_cr0(&mut v, &caps, s.cr0)?;
        set_cr4(&mut v, &caps, s.cr4)?;
        if let Some(p) = pdptes {
            write_pdptes(&mut v, &p)?;
        }
        v.write(GUEST_IA32_EFER, s.efer)?;
        // An exception already queued (KVM_SET_VCPU_EVENTS) follows the new
        // CR0.PE: with or without its error code (exits::exception_info).
        let pending = v.read(ENTRY_INTR_INFO);
        if pending & exits::INTR_INFO_VALID != 0 && (pending >> 8) & 7 == 3 {
            let code = (pending & exits::INTR_INFO_DELIVER_CODE != 0).then(|| v.read(ENTRY_EXCEPTION_ERROR_CODE));
            // CAST: bits 7:0 are the vector.
            let (info, code) = exits::exception_info(pending as u8, code, s.cr0);
            if let Some(c) = code {
                v.write(ENTRY_EXCEPTION_ERROR_CODE, c)?;
            }
            v.write(ENTRY_INTR_INFO, info)?;
        }
        set_long_mode(&mut v, s.efer & EFER_LMA != 0)
    }

    /// KVM_GET_MSRS: fills `entries` in order, stopping at the first MSR the
    /// guest does not have; returns how many were read.
    pub(crate) fn get_msrs(&self, entries: &mut [uapi::kvm_msr_entry]) -> Result<usize> {
        let mut t = self.token()?;
        let st = t.state();
        let msrs = &st.guest.msrs;
        let v = st.vmcs.load()?;
        for (n, e) in entries.iter_mut().enumerate() {
            match msrs.get(&v, e.index, false) {
                Some(val) => e.data = val,
                None => return Ok(n),
            }
        }
        Ok(entries.len())
    }

    /// KVM_SET_MSRS: writes `entries` in order, stopping at the first one
    /// refused; returns how many were written.
    pub(crate) fn set_msrs(&self, entries: &[uapi::kvm_msr_entry]) -> Result<usize> {
        let mut t = self.token()?;
        let st = t.state();
        let msrs = &mut st.guest.msrs;
        let mut v = st.vmcs.load()?;
        for (n, e) in entries.iter().enumerate() {
            if msrs.set(&mut v, e.index, e.data, false, true).is_err() {
                return Ok(n);
            }
        }
        Ok(entries.len())
    }

    /// KVM_SET_CPUID2: the table the guest's CPUID reads from now on. After
    /// the first KVM_RUN only the same table is accepted (EINVAL otherwise,
    /// as KVM's kvm_cpuid_check_equal answers): changing CPUID under a
    /// running guest is unsound.
    pub(crate) fn set_cpuid(&self, table: KVec<kvm_cpuid_entry2>) -> Result {
        let mut t = self.token()?;
        let st = t.state();
        if st.ran {
            let same = st.guest.cpuid.len() == table.len()
                && st.guest.cpuid.iter().zip(table.iter()).all(|(a, b)| {
                    (a.function, a.index, a.flags, a.eax, a.ebx, a.ecx, a.edx)
                        == (b.function, b.index, b.flags, b.eax, b.ebx, b.ecx, b.edx)
                });
            return if same { Ok(()) } else { Err(EINVAL) };
        }
        st.guest.cpuid = table;
        Ok(())
    }

    /// KVM_GET_CPUID2: a copy of the table KVM_SET_CPUID2 set.
    pub(crate) fn get_cpuid(&self) -> Result<KVec<kvm_cpuid_entry2>> {
        let mut t = self.token()?;
        let st = t.state();
        let mut out = KVec::with_capacity(st.guest.cpuid.len(), GFP_KERNEL)?;
        for e in st.guest.cpuid.iter() {
            out.push(*e, GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// KVM_SET_SIGNAL_MASK: the signals blocked while KVM_RUN runs (None:
    /// the thread's own mask).
    pub(crate) fn set_signal_mask(&self, mask: Option<u64>) -> Result {
        let mut t = self.token()?;
        t.state().sigmask = mask;
        Ok(())
    }

    /// KVM_RUN: runs the guest until an exit that userspace must handle.
    pub(crate) fn run(&self) -> Result {
        let run = self.run_page();
        let mut t = self.token()?;
        let st = t.state();
        st.ran = true;
        if let Some(mask) = &st.sigmask {
            // SAFETY: `mask` is a sigset_t's 8 bytes; deactivated below.
            unsafe { rvmx_glue_sigmask_activate(mask) };
        }
        let r = self.run_locked(st, run);
        self.stats.returned(&r, run);
        if st.sigmask.is_some() {
            // SAFETY: pairs with the activation above.
            unsafe { rvmx_glue_sigmask_deactivate() };
        }
        run.set_cr8_apic_base(st.guest.cr8, st.guest.msrs.apic_base);
        r
    }

    fn run_locked(&self, st: &mut VcpuState, run: RunPage) -> Result {
        // Finish the instruction the last exit to userspace left open (the
        // data of an IN or an MMIO read, a hypercall's return value).
        if exits::complete_pending(self, st, run, self.pio_page())? {
            return Ok(());
        }
        // Userspace may write the run page at any time: its inputs are read
        // once each (uapi/run.rs).
        let (immediate_exit, want_window, cr8) = (run.immediate_exit(), run.request_interrupt_window(), run.cr8());
        // As KVM without an in-kernel local APIC: userspace owns the TPR
        // and hands it in with each KVM_RUN (a value with reserved bits set
        // is ignored, as KVM's kvm_set_cr8 refuses it).
        if cr8 >> 4 == 0 {
            st.guest.cr8 = cr8;
        }
        st.guest.want_irq_window = want_window != 0;
        if immediate_exit != 0 {
            run.set_exit_reason(uapi::KVM_EXIT_INTR);
            return Err(EINTR);
        }
        loop {
            // SAFETY: a plain check of the current task.
            if unsafe { rvmx_glue_signal_pending() } {
                run.set_exit_reason(uapi::KVM_EXIT_INTR);
                return Err(EINTR);
            }
            // SAFETY: may sleep; we hold no lock but the run token.
            unsafe { rvmx_glue_cond_resched() };
            match self.guest_section(st)? {
                Section::ToUser => return Ok(()),
                Section::Reschedule => continue,
                Section::EptViolation(f) => match self.vm.fault_in(f.gpa, f.write, &mut st.ept_tables)? {
                    Fault::Mapped => {
                        self.stats.ept_faults_mapped.add(1);
                        continue;
                    }
                    Fault::Mmio => {
                        if exits::mmio::start(self, st, &f, run)? {
                            return Ok(());
                        }
                    }
                },
                Section::StringIo(s) => {
                    if exits::io::start_string(self, st, &s, run, self.pio_page())? {
                        return Ok(());
                    }
                }
                Section::LoadPdptes(cr3) => match self.vm.read_pdptes(cr3) {
                    Ok(Some(p)) => st.pdptes = Some(p),
                    // Reserved bits set, or no memory there: the CPU would
                    // have refused the MOV with #GP; rvmx has already done
                    // it, so it says so rather than guess.
                    _ => {
                        exits::report_internal_error(run, uapi::KVM_INTERNAL_ERROR_EMULATION, exits::reason::CR_ACCESS);
                        return Ok(());
                    }
                },
            }
        }
    }

    fn pio_page(&self) -> *mut u8 {
        self.pages[PIO_PAGE].as_ptr()
    }

    /// One guest section (see the module comment): load the VMCS and the
    /// guest's FPU, and enter the guest until an exit needs userspace, needs
    /// to sleep, or the scheduler or a signal wants the CPU.
    fn guest_section(&self, st: &mut VcpuState) -> Result<Section> {
        let run = self.run_page();
        // SAFETY: paired with `rvmx_glue_fpu_end` below; disables preemption.
        unsafe { rvmx_glue_fpu_begin() };
        // SAFETY: we own the FPU registers now, the area is page-aligned and
        // sized for this XCR0 (checked at creation).
        unsafe { hw::xrstor(st.fpu.as_ptr(), st.guest.xfeatures) };
        // The guest's XCR0, checked against the host's at XSETBV. Nothing
        // else on this CPU uses XSAVE until it is put back: preemption is
        // off and the kernel's FPU is ours (kernel_fpu_begin).
        if st.guest.xcr0 != st.guest.host_xcr0 {
            hw::xsetbv(st.guest.xcr0);
        }
        // SAFETY: preemption is off until `put_host` below, and the CPU
        // stays in the kernel in between.
        let host_msrs = unsafe { st.guest.msrs.load_guest() };
        let (ds, es) = hw::read_ds_es();
        let mut segs = HostSegments::default();
        // SAFETY: fills `segs` from this CPU's segment registers and LDTR.
        unsafe { rvmx_glue_save_host_segments(&mut segs) };
        // SAFETY: reads this CPU's number; preemption is off.
        let cpu = unsafe { rvmx_glue_raw_cpu_id() };

        let result = (|| -> Result<Section> {
            let mut v = st.vmcs.load()?;
            // SAFETY: preemption is off (the VMCS is loaded on this CPU).
            unsafe { rvmx_glue_ibpb_on_vcpu_switch(st.uid) };
            st.host_rsp = 0;
            setup_host_cpu_state(&mut v)?;
            if let Some(vpid) = &st.vpid {
                if st.flush_tlb || st.last_cpu != Some(cpu) {
                    if crate::hw::vmx::invvpid_single(vpid.get()).is_err() {
                        pr_err!("INVVPID failed\n");
                        return Err(EIO);
                    }
                    st.flush_tlb = false;
                }
            }
            st.last_cpu = Some(cpu);
            if let Some(p) = st.pdptes.take() {
                write_pdptes(&mut v, &p)?;
            }
            let mut host = HostCache { cr3: 0, cr4: 0 };
            if st.rip_advance != 0 {
                let rip = v.read(GUEST_RIP).0;
                v.write(GUEST_RIP, Natural(rip.wrapping_add(st.rip_advance)))?;
                clear_interrupt_shadow(&mut v)?;
                st.rip_advance = 0;
            }
            let mut resume = 0u32;
            // SAFETY: IA32_DEBUGCTL exists on every CPU with VMX (and the
            // thread stays on this CPU for the section).
            let host_debugctl = unsafe { msr::rdmsr(msr::IA32_DEBUGCTL) };
            let section = loop {
                // SAFETY: paired with the enable below; the guest runs with
                // interrupts off in the host (they cause VM exits instead).
                unsafe { rvmx_glue_irq_disable() };
                // Leave the section for a signal, the scheduler, or pending
                // softirqs: the section runs with bottom halves disabled
                // (kernel_fpu_begin), so timers and RCU callbacks queued on
                // this CPU run only when it ends.
                // SAFETY: plain checks of the current task and CPU.
                if unsafe { rvmx_glue_signal_pending() || rvmx_glue_need_resched() || rvmx_glue_softirq_pending() } {
                    // SAFETY: pairs with the disable above.
                    unsafe { rvmx_glue_irq_enable() };
                    break Section::Reschedule;
                }
                // Last VMCS updates before the entry, with interrupts off.
                if let Err(e) = prepare_entry(&mut v, &mut st.guest, &mut host, st.cr2, &self.stats) {
                    // SAFETY: pairs with the disable above.
                    unsafe { rvmx_glue_irq_enable() };
                    return Err(e);
                }
                match self.l1d_flush {
                    crate::caps::L1dFlush::NotNeeded => {}
                    // SAFETY: caps.rs saw IA32_FLUSH_CMD on this CPU; the
                    // write only flushes L1D (the L1TF mitigation).
                    crate::caps::L1dFlush::Msr => unsafe { msr::wrmsr(msr::IA32_FLUSH_CMD, 1) },
                    // SAFETY: the module allocated the buffer at load for
                    // this mode (rvmx_main.rs) and frees it after the last
                    // vCPU is gone.
                    crate::caps::L1dFlush::Software => unsafe { hw::l1d_flush_software() },
                }
                // The guest's breakpoints, if its DR7 arms any (exits/dr.rs).
                let guest_breakpoints = st.guest.debug.armed();
                if guest_breakpoints {
                    // SAFETY: interrupts stay off until the host's debug
                    // registers are back, right after the exit.
                    unsafe { hw::load_guest_debug_regs(&st.guest.debug.dr, st.guest.debug.dr6) };
                }
                // The time from the last exit to this entry, to its reason.
                if let Some((basic, t)) = st.last_exit.take() {
                    self.stats.exit_time(basic, crate::msrs::read_tsc().wrapping_sub(t));
                }
                // SAFETY: the VMCS is current (we hold `v`), its host state
                // is this CPU's, `regs` and `host_rsp` are ours.
                let r = unsafe { rvmx_vmenter(st.regs.as_mut_ptr(), resume, &mut st.host_rsp) };
                let exit_tsc = crate::msrs::read_tsc();
                st.cr2 = hw::read_cr2();
                if guest_breakpoints {
                    st.guest.debug.set_dr6_from_cpu(hw::read_dr6());
                    hw::clear_dr6();
                }
                // The exit set DR7 to 0x400 and cleared IA32_DEBUGCTL (SDM
                // Vol. 3C §28.5.1): the host's come back first, as in KVM's
                // vmx_vcpu_run.
                if host_debugctl != 0 {
                    // SAFETY: IA32_DEBUGCTL exists on every CPU with VMX,
                    // and this is the value it held a moment ago.
                    unsafe { msr::wrmsr(msr::IA32_DEBUGCTL, host_debugctl) };
                }
                // SAFETY: rewrites this CPU's debug registers from the
                // kernel's own per-CPU copy; interrupts are off.
                unsafe { rvmx_glue_restore_host_breakpoints() };
                let reason = if r == 0 { v.read(EXIT_REASON) } else { 0 };
                // An NMI or a machine check that exited the guest is the
                // host's: run its handler now, with interrupts still off, as
                // the event itself would have.
                if r == 0 {
                    exits::interrupt::handle_host_events_irqoff(&v, reason);
                }
                // SAFETY: pairs with the disable above: a pending host
                // interrupt (the cause of an external-interrupt exit) is
                // delivered here.
                unsafe { rvmx_glue_irq_enable() };
                if r != 0 {
                    self.stats.entry_failures.add(1);
                    let e = exits::entry_failure::vm_instruction_failed(&v, run, r, self.id);
                    self.publish_exit_info(&v, st.exits, e);
                    break Section::ToUser;
                }
                resume = 1;
                st.exits += 1;
                self.stats.exit(reason & 0xffff);
                st.last_exit = Some((reason & 0xffff, exit_tsc));
                if reason & exits::reason::ENTRY_FAILURE != 0 {
                    self.stats.entry_failures.add(1);
                    // The entry failed its guest-state checks (reason 33),
                    // MSR loading (34) or a machine check (41): the guest
                    // never ran.
                    let e = exits::entry_failure::entry_failed_with_exit(&v, run, reason, self.id);
                    self.publish_exit_info(&v, st.exits, e);
                    break Section::ToUser;
                }
                let mut ctx = exits::ExitCtx {
                    vmcs: &mut v,
                    regs: &mut st.regs,
                    guest: &mut st.guest,
                    run,
                    pio: self.pio_page(),
                    pending: &mut st.pending,
                    vcpu_id: self.id,
                    ins_outs_info: self.ins_outs_info,
                };
                let section = match exits::handle(&mut ctx, reason)? {
                    Action::Resume => continue,
                    Action::ToUser => Section::ToUser,
                    Action::EptViolation(f) => Section::EptViolation(f),
                    Action::StringIo(s) => Section::StringIo(s),
                    Action::LoadPdptes(cr3) => Section::LoadPdptes(cr3),
                };
                self.publish_exit_info(&v, st.exits, Default::default());
                break section;
            };
            self.publish_run_state(&v, &st.guest);
            Ok(section)
        })();

        // Back to the host's world, in reverse order.
        hw::load_ds_es(ds, es);
        // SAFETY: the values saved above on this CPU (preemption is off);
        // before `put_host`, which restores the user GS base this resets.
        unsafe { rvmx_glue_restore_host_segments(&segs) };
        // SAFETY: `host_msrs` is what `load_guest` read on this CPU.
        unsafe { st.guest.msrs.put_host(&host_msrs) };
        if st.guest.xcr0 != st.guest.host_xcr0 {
            hw::xsetbv(st.guest.host_xcr0);
        }
        // SAFETY: we still own the FPU registers; same area as above.
        unsafe { hw::xsave(st.fpu.as_ptr(), st.guest.xfeatures) };
        // SAFETY: restores Linux's descriptor limits on this CPU (still
        // pinned: FPU section).
        unsafe { rvmx_glue_restore_host_descriptor_limits() };
        // SAFETY: pairs with `rvmx_glue_fpu_begin` above.
        unsafe { rvmx_glue_fpu_end() };
        result
    }

    /// Fills rvmx's exit-information page (for learners and debuggers).
    fn publish_exit_info(&self, v: &Loaded<'_>, exits: u64, failed: exits::entry_failure::Explained) {
        let full = v.read(EXIT_REASON);
        let info = rvmx_exit_info {
            basic_reason: full & 0xffff,
            full_reason: full,
            qualification: v.read(EXIT_QUALIFICATION).0,
            guest_physical_address: v.read(GUEST_PHYSICAL_ADDRESS),
            guest_linear_address: v.read(GUEST_LINEAR_ADDRESS).0,
            instruction_len: v.read(EXIT_INSTRUCTION_LEN),
            instruction_info: v.read(EXIT_INSTRUCTION_INFO),
            intr_info: v.read(EXIT_INTR_INFO),
            intr_error_code: v.read(EXIT_INTR_ERROR_CODE),
            guest_rip: v.read(GUEST_RIP).0,
            exits,
            vm_instruction_error: failed.vm_instruction_error,
            entry_check: failed.check,
            entry_segment: failed.segment,
            pad: 0,
            entry_value: failed.value,
        };
        // SAFETY: the info page is ours and large enough; userspace only
        // reads it.
        unsafe { self.pages[INFO_PAGE].as_ptr::<rvmx_exit_info>().write_volatile(info) };
    }

    /// The kvm_run fields KVM updates at every return from KVM_RUN that
    /// depend on the guest's interrupt state (`run` adds CR8 and APIC_BASE).
    fn publish_run_state(&self, v: &Loaded<'_>, g: &Guest) {
        let rflags = v.read(GUEST_RFLAGS).0;
        let ready = g.irq.is_none() && interruptible(v);
        self.run_page().set_interrupt_state(rflags & RFLAGS_IF != 0, ready);
    }
}

/// The VMCS and CPU updates right before a VM entry, with interrupts off:
/// a queued NMI or interrupt, or an NMI or interrupt window (only a vCPU that has one pays
/// for it; done after the last check for signals, so that an injected event
/// never waits in the VMCS while userspace runs), the host's CR3 and CR4
/// if they changed (the kernel switches page tables and CR4 bits under us),
/// and the guest's CR2.
fn prepare_entry(v: &mut Loaded<'_>, g: &mut Guest, host: &mut HostCache, cr2: u64, stats: &crate::stats::VcpuStats) -> Result {
    // NMIs first: they take priority over interrupts.
    if g.nmi_pending > 0 {
        update_nmi_window(v, g, stats)?;
    }
    if g.irq.is_some() || g.want_irq_window {
        update_interrupt_window(v, g, stats)?;
    }
    let cr3 = hw::read_cr3();
    if cr3 != host.cr3 {
        v.write(HOST_CR3, Natural(cr3))?;
        host.cr3 = cr3;
    }
    let cr4 = hw::cr4_shadow();
    if cr4 != host.cr4 {
        v.write(HOST_CR4, Natural(cr4))?;
        host.cr4 = cr4;
    }
    if hw::read_cr2() != cr2 {
        hw::write_cr2(cr2);
    }
    Ok(())
}

/// How a guest section ended.
enum Section {
    /// An exit for userspace: kvm_run says which.
    ToUser,
    /// A signal or the scheduler wants this thread.
    Reschedule,
    /// Guest memory to map (sleeps), or MMIO to emulate.
    EptViolation(exits::ept::EptFault),
    /// INS/OUTS: guest memory to read or write (sleeps).
    StringIo(exits::io::StringIo),
    /// PAE paging was turned on: load the PDPTEs from this CR3 (sleeps).
    LoadPdptes(u64),
}

impl VcpuState {
    /// The guest state exits/mmio.rs needs to emulate an MMIO instruction,
    /// read here, after the guest section, so that the EPT violations that
    /// only map RAM (nearly all of them) do not pay for it.
    pub(crate) fn insn_context(&mut self) -> Result<exits::mmio::InsnCtx> {
        let v = self.vmcs.load()?;
        let cs_ar = v.read(GUEST_CS_AR);
        Ok(exits::mmio::InsnCtx {
            rip: v.read(GUEST_RIP).0,
            cs_base: v.read(GUEST_CS_BASE).0,
            cs_db: cs_ar & (1 << 14) != 0,
            cs_l: cs_ar & (1 << 13) != 0,
            rsp: v.read(GUEST_RSP).0,
            paging: crate::gmem::Paging::capture(&v),
        })
    }

    /// The base of segment `seg` (decode.rs numbering: ES, CS, SS, DS, FS,
    /// GS), for an MMIO access that may cross a page.
    pub(crate) fn segment_base(&mut self, seg: u8) -> Result<u64> {
        let v = self.vmcs.load()?;
        let field = match seg {
            0 => GUEST_ES.base,
            1 => GUEST_CS.base,
            2 => GUEST_SS.base,
            3 => GUEST_DS.base,
            4 => GUEST_FS.base,
            _ => GUEST_GS.base,
        };
        Ok(v.read(field).0)
    }

    pub(crate) fn regs_mut(&mut self) -> &mut [u64; 16] {
        &mut self.regs
    }
}
