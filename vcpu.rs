// SPDX-License-Identifier: GPL-2.0

//! A vCPU: its VMCS, the guest registers the VMCS does not hold, the pages
//! it shares with userspace (kvm_run, port-I/O data, rvmx's exit
//! information), and the run loop that enters the guest and handles VM exits.
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

use crate::exits::{self, Action, Pending};
use crate::msrs::GuestMsrs;
use crate::vpid::Vpid;
use crate::hw::{self, cr::*, msr};
use crate::kpage::KernelPage;
use crate::uapi::{self, kvm_cpuid_entry2, kvm_regs, kvm_run, kvm_segment, kvm_sregs, rvmx_exit_info};
use crate::vm::{Fault, Vm};
use crate::vmcs::{controls, fields::*, Loaded, Vmcs};
use crate::vmxon;
use core::cell::UnsafeCell;
use kernel::sync::Arc;
use kernel::{new_condvar, new_mutex, prelude::*, sync::{CondVar, Mutex}};

extern "C" {
    fn rvmx_vmenter(regs: *mut u64, resume: u32, host_rsp: *mut u64) -> i32;
    static rvmx_vmexit: u8;
    fn rvmx_glue_irq_disable();
    fn rvmx_glue_irq_enable();
    fn rvmx_glue_need_resched() -> bool;
    fn rvmx_glue_cond_resched();
    fn rvmx_glue_signal_pending() -> bool;
    fn rvmx_glue_softirq_pending() -> bool;
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
/// The MXCSR bits a guest may set (the rest are reserved: LDMXCSR and
/// XRSTOR fault on them). Bit 6 (DAZ) exists on every x86-64 CPU rvmx
/// supports.
const MXCSR_VALID: u32 = 0xffff;
/// Guest interruptibility state (SDM Vol. 3C §25.4.2): blocking by STI
/// (bit 0) and by MOV SS/POP SS (bit 1), and by NMI (bit 3).
const BLOCKING_STI: u32 = 1 << 0;
const BLOCKING_MOVSS: u32 = 1 << 1;
const BLOCKING_STI_MOVSS: u32 = BLOCKING_STI | BLOCKING_MOVSS;
const BLOCKING_NMI: u32 = 1 << 3;
/// Event types in the interruption-information fields.
const INTR_TYPE_EXTERNAL: u32 = 0;
const INTR_TYPE_HW_EXCEPTION: u32 = 3;

/// VMX's interrupt-shadow bits in KVM's encoding (KVM_X86_SHADOW_INT_*:
/// MOV SS is 1, STI is 2; VMX has them the other way round).
fn shadow_to_kvm(s: u32) -> u8 {
    let mut k = 0;
    if s & BLOCKING_MOVSS != 0 {
        k |= uapi::KVM_X86_SHADOW_INT_MOV_SS as u8;
    }
    if s & BLOCKING_STI != 0 {
        k |= uapi::KVM_X86_SHADOW_INT_STI as u8;
    }
    k
}

fn shadow_from_kvm(k: u8) -> u32 {
    let mut s = 0;
    if u32::from(k) & uapi::KVM_X86_SHADOW_INT_MOV_SS != 0 {
        s |= BLOCKING_MOVSS;
    }
    if u32::from(k) & uapi::KVM_X86_SHADOW_INT_STI != 0 {
        s |= BLOCKING_STI;
    }
    s
}

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
    /// The vCPU's VPID, or 0 if it has none (vpid.rs).
    pub(crate) vpid: u16,
    /// The host's XCR0 (read at creation, in the host's context).
    pub(crate) host_xcr0: u64,
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
    pub(crate) guest: Guest,
    /// This vCPU's VPID (None: the CPU lacks VPIDs or all are taken).
    vpid: Option<Vpid>,
    /// The CPU the vCPU last ran on (VPID flushes, see vpid.rs).
    last_cpu: Option<u32>,
    /// The guest's linear translations must be flushed before it runs.
    flush_tlb: bool,
    /// Whether KVM_RUN ran yet (KVM refuses a new CPUID table after that).
    ran: bool,
    /// KVM_SET_SIGNAL_MASK's mask, in force during KVM_RUN.
    sigmask: Option<u64>,
    /// PDPTEs read for the guest's PAE paging, to write before the next
    /// entry (exits/cr.rs).
    pdptes: Option<[u64; 4]>,
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
    xsave_mask: u64,
    /// IA32_VMX_BASIC[54] (see exits/io.rs).
    ins_outs_info: bool,
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

fn seg_ar(s: &kvm_segment) -> u32 {
    if s.unusable != 0 || s.present == 0 {
        return 1 << 16;
    }
    u32::from(s.type_ & 15)
        | u32::from(s.s & 1) << 4
        | u32::from(s.dpl & 3) << 5
        | u32::from(s.present & 1) << 7
        | u32::from(s.avl & 1) << 12
        | u32::from(s.l & 1) << 13
        | u32::from(s.db & 1) << 14
        | u32::from(s.g & 1) << 15
}

fn write_seg(v: &mut Loaded<'_>, f: &SegmentFields, s: &kvm_segment) -> Result {
    v.write(f.selector, s.selector)?;
    v.write(f.base, Natural(s.base))?;
    v.write(f.limit, s.limit)?;
    v.write(f.access_rights, seg_ar(s))
}

fn read_seg(v: &Loaded<'_>, f: &SegmentFields) -> kvm_segment {
    let ar = v.read(f.access_rights);
    // CAST: each field is the few bits masked out of the access rights.
    kvm_segment {
        base: v.read(f.base).0,
        limit: v.read(f.limit),
        selector: v.read(f.selector),
        type_: (ar & 15) as u8,
        s: (ar >> 4 & 1) as u8,
        dpl: (ar >> 5 & 3) as u8,
        present: (ar >> 7 & 1) as u8,
        avl: (ar >> 12 & 1) as u8,
        l: (ar >> 13 & 1) as u8,
        db: (ar >> 14 & 1) as u8,
        g: (ar >> 15 & 1) as u8,
        unusable: (ar >> 16 & 1) as u8,
        padding: 0,
    }
}

fn segment(selector: u16, base: u64, limit: u32, type_: u8, s: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
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
            guest: Guest {
                msrs,
                cr8: 0,
                xcr0: 1,
                cpuid: KVec::new(),
                irq: None,
                want_irq_window: false,
                irq_window_exiting: false,
                vpid: 0,
                host_xcr0: hw::xcr0(),
            },
            vpid,
            last_cpu: None,
            flush_tlb: true,
            ran: false,
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
                xsave_mask: hw::xcr0(),
                ins_outs_info: caps.ins_outs_info,
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

    /// The struct page of mmap page `index` (for kglue.c's mmap), or null.
    pub(crate) fn mmap_page(&self, index: usize) -> *mut core::ffi::c_void {
        match self.pages.get(index) {
            // SAFETY: a direct-map address of a page we own.
            Some(p) => unsafe { rvmx_glue_virt_to_page(p.as_ptr()) },
            None => core::ptr::null_mut(),
        }
    }

    fn run_page(&self) -> *mut kvm_run {
        self.pages[RUN_PAGE].as_ptr()
    }

    /// Takes the run token, waiting (interruptibly) while another thread
    /// holds it, as KVM's vcpu->mutex does.
    fn token(&self) -> Result<RunToken<'_>> {
        let mut busy = self.token.lock();
        while *busy {
            if self.token_free.wait_interruptible(&mut busy) {
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
        s.cr0 = v.read(CR0_READ_SHADOW).0;
        s.cr2 = cr2;
        s.cr3 = v.read(GUEST_CR3).0;
        s.cr4 = v.read(CR4_READ_SHADOW).0;
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
        if s.cr4 & CR4_VMXE != 0 || s.cr4 & !caps.cr4_fixed1 != 0 || s.cr0 >> 32 != 0 {
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

    /// KVM_INTERRUPT: queues an external interrupt, injected as soon as the
    /// guest can take it (`update_interrupt_window`). Like KVM without an
    /// in-kernel interrupt controller, a second call before the first was
    /// injected replaces it: userspace is expected to wait for
    /// ready_for_interrupt_injection.
    pub(crate) fn interrupt(&self, vector: u32) -> Result {
        let vector = u8::try_from(vector).map_err(|_| EINVAL)?;
        let mut t = self.token()?;
        t.state().guest.irq = Some(vector);
        Ok(())
    }

    /// KVM_SET_SIGNAL_MASK: the signals blocked while KVM_RUN runs (None:
    /// the thread's own mask).
    pub(crate) fn set_signal_mask(&self, mask: Option<u64>) -> Result {
        let mut t = self.token()?;
        t.state().sigmask = mask;
        Ok(())
    }

    /// KVM_GET_FPU: the x87 and SSE state, from the legacy (FXSAVE-format)
    /// region at the start of the guest's XSAVE image.
    pub(crate) fn get_fpu(&self) -> Result<uapi::kvm_fpu> {
        let mut t = self.token()?;
        let img = t.state().fpu.as_ptr::<u8>();
        let mut f = uapi::kvm_fpu::default();
        // SAFETY: the image is a page we own; the offsets are those of the
        // FXSAVE layout (SDM Vol. 1 §10.5.1), all within its first 512 bytes.
        unsafe {
            let rd16 = |o: usize| img.add(o).cast::<u16>().read_unaligned();
            let rd64 = |o: usize| img.add(o).cast::<u64>().read_unaligned();
            f.fcw = rd16(0);
            f.fsw = rd16(2);
            f.ftwx = *img.add(4);
            f.last_opcode = rd16(6);
            f.last_ip = rd64(8);
            f.last_dp = rd64(16);
            f.mxcsr = img.add(24).cast::<u32>().read_unaligned();
            core::ptr::copy_nonoverlapping(img.add(32), f.fpr.as_mut_ptr().cast::<u8>(), 128);
            core::ptr::copy_nonoverlapping(img.add(160), f.xmm.as_mut_ptr().cast::<u8>(), 256);
        }
        Ok(f)
    }

    /// KVM_SET_FPU: the inverse of `get_fpu`; marks x87 and SSE state as
    /// present in the image's header, so the next XRSTOR loads them. An
    /// MXCSR with reserved bits set is EINVAL (XRSTOR would fault on it).
    pub(crate) fn set_fpu(&self, f: &uapi::kvm_fpu) -> Result {
        if f.mxcsr & !MXCSR_VALID != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let img = t.state().fpu.as_ptr::<u8>();
        // SAFETY: as in `get_fpu`; XSTATE_BV is at offset 512.
        unsafe {
            let wr16 = |o: usize, v: u16| img.add(o).cast::<u16>().write_unaligned(v);
            let wr64 = |o: usize, v: u64| img.add(o).cast::<u64>().write_unaligned(v);
            wr16(0, f.fcw);
            wr16(2, f.fsw);
            *img.add(4) = f.ftwx;
            wr16(6, f.last_opcode);
            wr64(8, f.last_ip);
            wr64(16, f.last_dp);
            img.add(24).cast::<u32>().write_unaligned(f.mxcsr);
            core::ptr::copy_nonoverlapping(f.fpr.as_ptr().cast::<u8>(), img.add(32), 128);
            core::ptr::copy_nonoverlapping(f.xmm.as_ptr().cast::<u8>(), img.add(160), 256);
            let bv = img.add(512).cast::<u64>();
            bv.write(bv.read() | 3);
        }
        Ok(())
    }

    /// KVM_GET_XSAVE: the guest's XSAVE image, in the standard (not
    /// compacted) format, as XSAVE stored it.
    pub(crate) fn get_xsave(&self, out: &mut uapi::kvm_xsave) -> Result {
        let mut t = self.token()?;
        // SAFETY: both are 4096 bytes; the image is ours.
        unsafe { core::ptr::copy_nonoverlapping(t.state().fpu.as_ptr::<u8>(), out.region.as_mut_ptr().cast::<u8>(), 4096) };
        Ok(())
    }

    /// KVM_SET_XSAVE, with the checks XRSTOR itself would make (a header
    /// with components the host does not enable, a compacted image, non-zero
    /// reserved header bytes, a bad MXCSR: EINVAL), so that loading the
    /// image can never fault.
    pub(crate) fn set_xsave(&self, x: &uapi::kvm_xsave) -> Result {
        let b = |o: usize| u64::from(x.region[o / 4]) | u64::from(x.region[o / 4 + 1]) << 32;
        let (xstate_bv, xcomp_bv) = (b(512), b(520));
        let reserved_clear = (528..576).step_by(8).all(|o| b(o) == 0);
        if xstate_bv & !self.xsave_mask != 0 || xcomp_bv != 0 || !reserved_clear || x.region[6] & !MXCSR_VALID != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        // SAFETY: both are 4096 bytes; the image is ours.
        unsafe { core::ptr::copy_nonoverlapping(x.region.as_ptr().cast::<u8>(), t.state().fpu.as_ptr::<u8>(), 4096) };
        Ok(())
    }

    /// KVM_GET_XCRS: XCR0, the only extended control register.
    pub(crate) fn get_xcrs(&self) -> Result<uapi::kvm_xcrs> {
        let mut t = self.token()?;
        let mut x = uapi::kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        x.xcrs[0].value = t.state().guest.xcr0;
        Ok(x)
    }

    /// KVM_SET_XCRS: XCR0 from the first entry naming it (KVM's checks:
    /// at most 16 entries, no flags, a value XSETBV would accept).
    pub(crate) fn set_xcrs(&self, x: &uapi::kvm_xcrs) -> Result {
        if x.nr_xcrs as usize > x.xcrs.len() || x.flags != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        if let Some(e) = x.xcrs[..x.nr_xcrs as usize].iter().find(|e| e.xcr == 0) {
            if !exits::xsetbv::valid_xcr0(e.value, self.xsave_mask) {
                return Err(EINVAL);
            }
            t.state().guest.xcr0 = e.value;
        }
        Ok(())
    }

    /// KVM_GET_VCPU_EVENTS: the events waiting for the next VM entry (an
    /// exception rvmx injected, the interrupt KVM_INTERRUPT queued), the
    /// guest's interrupt shadow and NMI blocking, in KVM's encoding.
    pub(crate) fn get_events(&self) -> Result<uapi::kvm_vcpu_events> {
        let mut t = self.token()?;
        let st = t.state();
        let irq = st.guest.irq;
        let v = st.vmcs.load()?;
        let mut e = uapi::kvm_vcpu_events::default();
        let info = v.read(ENTRY_INTR_INFO);
        if info & exits::INTR_INFO_VALID != 0 {
            // CAST: the vector is bits 7:0.
            let nr = info as u8;
            match (info >> 8) & 7 {
                INTR_TYPE_HW_EXCEPTION => {
                    e.exception.injected = 1;
                    e.exception.nr = nr;
                    e.exception.has_error_code = u8::from(info & (1 << 11) != 0);
                    e.exception.error_code = v.read(ENTRY_EXCEPTION_ERROR_CODE);
                }
                INTR_TYPE_EXTERNAL => {
                    e.interrupt.injected = 1;
                    e.interrupt.nr = nr;
                }
                _ => {}
            }
        }
        if let Some(nr) = irq {
            e.interrupt.injected = 1;
            e.interrupt.nr = nr;
        }
        let shadow = v.read(GUEST_INTERRUPTIBILITY);
        e.interrupt.shadow = shadow_to_kvm(shadow);
        e.nmi.masked = u8::from(shadow & BLOCKING_NMI != 0);
        e.flags = uapi::KVM_VCPUEVENT_VALID_NMI_PENDING | uapi::KVM_VCPUEVENT_VALID_SHADOW;
        Ok(e)
    }

    /// KVM_SET_VCPU_EVENTS, with KVM's checks; what rvmx cannot deliver (a
    /// pending or injected NMI, a soft interrupt, SMM, a pending triple
    /// fault, exception payloads) is refused with EINVAL rather than
    /// dropped.
    pub(crate) fn set_events(&self, e: &uapi::kvm_vcpu_events) -> Result {
        use uapi::*;
        let known = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW
            | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
        if e.flags & !known != 0 || e.flags & KVM_VCPUEVENT_VALID_PAYLOAD != 0 {
            return Err(EINVAL);
        }
        if e.exception.injected != 0 && (e.exception.nr > 31 || e.exception.nr == 2) {
            return Err(EINVAL);
        }
        let nmi = e.nmi.injected != 0 || (e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 && e.nmi.pending != 0);
        let smm = e.flags & KVM_VCPUEVENT_VALID_SMM != 0 && (e.smi.smm != 0 || e.smi.pending != 0);
        let triple = e.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT != 0 && e.triple_fault.pending != 0;
        if nmi || smm || triple || (e.interrupt.injected != 0 && e.interrupt.soft != 0) {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let st = t.state();
        st.guest.irq = (e.interrupt.injected != 0).then_some(e.interrupt.nr);
        let mut v = st.vmcs.load()?;
        let mut info = 0;
        if e.exception.injected != 0 {
            info = u32::from(e.exception.nr) | (INTR_TYPE_HW_EXCEPTION << 8) | exits::INTR_INFO_VALID;
            if e.exception.has_error_code != 0 {
                info |= 1 << 11;
                v.write(ENTRY_EXCEPTION_ERROR_CODE, e.exception.error_code)?;
            }
        }
        v.write(ENTRY_INTR_INFO, info)?;
        let mut shadow = v.read(GUEST_INTERRUPTIBILITY);
        if e.flags & KVM_VCPUEVENT_VALID_SHADOW != 0 {
            shadow = (shadow & !BLOCKING_STI_MOVSS) | shadow_from_kvm(e.interrupt.shadow);
        }
        shadow = if e.nmi.masked != 0 { shadow | BLOCKING_NMI } else { shadow & !BLOCKING_NMI };
        v.write(GUEST_INTERRUPTIBILITY, shadow)
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
        if st.sigmask.is_some() {
            // SAFETY: pairs with the activation above.
            unsafe { rvmx_glue_sigmask_deactivate() };
        }
        // SAFETY: plain stores to our run page.
        unsafe {
            (*run).cr8 = st.guest.cr8;
            (*run).apic_base = st.guest.msrs.apic_base;
        }
        r
    }

    fn run_locked(&self, st: &mut VcpuState, run: *mut kvm_run) -> Result {
        // Finish the instruction the last exit to userspace left open (the
        // data of an IN or an MMIO read, a hypercall's return value).
        exits::complete_pending(self, st, run, self.pio_page())?;
        // SAFETY: `run` is our run page; userspace may write it at any time,
        // so its inputs are read once, with volatile reads.
        let (immediate_exit, want_window, cr8) = unsafe {
            (
                core::ptr::addr_of!((*run).immediate_exit__unsafe).read_volatile(),
                core::ptr::addr_of!((*run).request_interrupt_window).read_volatile(),
                core::ptr::addr_of!((*run).cr8).read_volatile(),
            )
        };
        // As KVM without an in-kernel local APIC: userspace owns the TPR
        // and hands it in with each KVM_RUN (a value with reserved bits set
        // is ignored, as KVM's kvm_set_cr8 refuses it).
        if cr8 >> 4 == 0 {
            st.guest.cr8 = cr8;
        }
        st.guest.want_irq_window = want_window != 0;
        if immediate_exit != 0 {
            // SAFETY: a plain store to our run page.
            unsafe { (*run).exit_reason = uapi::KVM_EXIT_INTR };
            return Err(EINTR);
        }
        loop {
            // SAFETY: a plain check of the current task.
            if unsafe { rvmx_glue_signal_pending() } {
                // SAFETY: a plain store to our run page.
                unsafe { (*run).exit_reason = uapi::KVM_EXIT_INTR };
                return Err(EINTR);
            }
            // SAFETY: may sleep; we hold no lock but the run token.
            unsafe { rvmx_glue_cond_resched() };
            match self.guest_section(st)? {
                Section::ToUser => return Ok(()),
                Section::Reschedule => continue,
                Section::EptViolation(f) => match self.vm.fault_in(f.gpa, f.write)? {
                    Fault::Mapped => continue,
                    Fault::Mmio => return exits::mmio::start(self, st, &f, run),
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
        unsafe { hw::xrstor(st.fpu.as_ptr(), self.xsave_mask) };
        // The guest's XCR0, checked against the host's at XSETBV. Nothing
        // else on this CPU uses XSAVE until it is put back: preemption is
        // off and the kernel's FPU is ours (kernel_fpu_begin).
        if st.guest.xcr0 != self.xsave_mask {
            hw::xsetbv(st.guest.xcr0);
        }
        // SAFETY: preemption is off until `put_host` below, and the CPU
        // stays in the kernel in between.
        let host_msrs = unsafe { st.guest.msrs.load_guest() };
        let (ds, es) = hw::read_ds_es();
        // SAFETY: reads this CPU's number; preemption is off.
        let cpu = unsafe { rvmx_glue_raw_cpu_id() };

        let result = (|| -> Result<Section> {
            let mut v = st.vmcs.load()?;
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
                if let Err(e) = prepare_entry(&mut v, &mut st.guest, &mut host, st.cr2) {
                    // SAFETY: pairs with the disable above.
                    unsafe { rvmx_glue_irq_enable() };
                    return Err(e);
                }
                // SAFETY: the VMCS is current (we hold `v`), its host state
                // is this CPU's, `regs` and `host_rsp` are ours.
                let r = unsafe { rvmx_vmenter(st.regs.as_mut_ptr(), resume, &mut st.host_rsp) };
                st.cr2 = hw::read_cr2();
                let reason = if r == 0 { v.read(EXIT_REASON) } else { 0 };
                // An NMI that exited the guest is the host's: run its handler
                // now, with interrupts still off, as the NMI would have.
                if r == 0 && reason == exits::reason::EXCEPTION_OR_NMI {
                    exits::interrupt::handle_nmi_irqoff(&v);
                }
                // SAFETY: pairs with the disable above: a pending host
                // interrupt (the cause of an external-interrupt exit) is
                // delivered here.
                unsafe { rvmx_glue_irq_enable() };
                if r != 0 {
                    exits::entry_failed(&v, run, r, self.id);
                    break Section::ToUser;
                }
                resume = 1;
                st.exits += 1;
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
                self.publish_exit_info(&v, st.exits);
                break section;
            };
            self.publish_run_state(&v, &st.guest);
            Ok(section)
        })();

        // Back to the host's world, in reverse order.
        hw::load_ds_es(ds, es);
        // SAFETY: `host_msrs` is what `load_guest` read on this CPU.
        unsafe { st.guest.msrs.put_host(&host_msrs) };
        if st.guest.xcr0 != self.xsave_mask {
            hw::xsetbv(self.xsave_mask);
        }
        // SAFETY: we still own the FPU registers; same area as above.
        unsafe { hw::xsave(st.fpu.as_ptr(), self.xsave_mask) };
        // SAFETY: restores Linux's descriptor limits on this CPU (still
        // pinned: FPU section).
        unsafe { rvmx_glue_restore_host_descriptor_limits() };
        // SAFETY: pairs with `rvmx_glue_fpu_begin` above.
        unsafe { rvmx_glue_fpu_end() };
        result
    }

    /// Fills rvmx's exit-information page (for learners and debuggers).
    fn publish_exit_info(&self, v: &Loaded<'_>, exits: u64) {
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
        let run = self.run_page();
        // SAFETY: plain stores to our run page.
        unsafe {
            (*run).if_flag = u8::from(rflags & RFLAGS_IF != 0);
            (*run).ready_for_interrupt_injection = u8::from(ready);
        }
    }
}

/// The VMCS and CPU updates right before a VM entry, with interrupts off:
/// a queued interrupt or an interrupt window (only a vCPU that has one pays
/// for it; done after the last check for signals, so that an injected event
/// never waits in the VMCS while userspace runs), the host's CR3 and CR4
/// if they changed (the kernel switches page tables and CR4 bits under us),
/// and the guest's CR2.
fn prepare_entry(v: &mut Loaded<'_>, g: &mut Guest, host: &mut HostCache, cr2: u64) -> Result {
    if g.irq.is_some() || g.want_irq_window {
        update_interrupt_window(v, g)?;
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

/// Whether the guest can take an external interrupt at the next VM entry:
/// RFLAGS.IF set, no STI or MOV SS shadow, and no other event being
/// injected (SDM Vol. 3C §27.6 and the entry checks of §27.3.1.5).
fn interruptible(v: &Loaded<'_>) -> bool {
    v.read(GUEST_RFLAGS).0 & RFLAGS_IF != 0
        && v.read(GUEST_INTERRUPTIBILITY) & BLOCKING_STI_MOVSS == 0
        && v.read(ENTRY_INTR_INFO) & exits::INTR_INFO_VALID == 0
}

/// Injects the interrupt KVM_INTERRUPT queued if the guest can take it now;
/// otherwise, or if the VMM asked for an interrupt window, turns on
/// "interrupt-window exiting", so that the CPU exits as soon as the guest
/// can take one (exits/interrupt.rs). This is the interrupt-window protocol
/// of a userspace interrupt controller (api.rst, KVM_INTERRUPT and
/// kvm_run.request_interrupt_window).
fn update_interrupt_window(v: &mut Loaded<'_>, g: &mut Guest) -> Result {
    let mut window = g.want_irq_window;
    if let Some(vector) = g.irq {
        if interruptible(v) {
            // Type 0, external interrupt.
            v.write(ENTRY_INTR_INFO, u32::from(vector) | exits::INTR_INFO_VALID)?;
            g.irq = None;
        } else {
            window = true;
        }
    }
    set_irq_window_exiting(v, g, window)
}

/// Turns "interrupt-window exiting" on or off.
pub(crate) fn set_irq_window_exiting(v: &mut Loaded<'_>, g: &mut Guest, on: bool) -> Result {
    if g.irq_window_exiting == on {
        return Ok(());
    }
    let bit = controls::proc::INTERRUPT_WINDOW_EXITING;
    let c = v.read(PROC_BASED_CONTROLS);
    v.write(PROC_BASED_CONTROLS, if on { c | bit } else { c & !bit })?;
    g.irq_window_exiting = on;
    Ok(())
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

/// The execution controls, from what rvmx wants and what the CPU allows.
fn setup_controls(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, eptp: u64, msr_bitmap: u64, vpid: Option<u16>) -> Result {
    use controls::*;
    let pin_ctl = adjust(&caps.pin, "pin-based", pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING, 0)?;
    let mut proc_ctl = adjust(
        &caps.proc,
        "processor-based",
        proc::HLT_EXITING
            | proc::UNCONDITIONAL_IO_EXITING
            | proc::ACTIVATE_SECONDARY
            | proc::MOV_DR_EXITING
            | proc::CR8_LOAD_EXITING
            | proc::CR8_STORE_EXITING
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::RDPMC_EXITING
            | proc::USE_TSC_OFFSETTING
            | proc::USE_MSR_BITMAPS,
        0,
    )?;
    // With EPT, CR3 accesses need no exits; drop them if the CPU allows.
    proc_ctl &= !((proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING) & !caps.proc.must_be_one);
    let vpid_ctl = if vpid.is_some() { proc2::ENABLE_VPID } else { 0 };
    let proc2_ctl = adjust(&caps.proc2, "secondary", proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | vpid_ctl, proc2::ENABLE_RDTSCP)?;
    let exit_ctl = adjust(
        &caps.exit,
        "VM-exit",
        exit::HOST_ADDRESS_SPACE_SIZE | exit::SAVE_IA32_EFER | exit::LOAD_IA32_EFER,
        exit::SAVE_IA32_PAT | exit::LOAD_IA32_PAT,
    )?;
    let entry_ctl = adjust(&caps.entry, "VM-entry", entry::LOAD_IA32_EFER, entry::LOAD_IA32_PAT)?;
    v.write(PIN_BASED_CONTROLS, pin_ctl)?;
    v.write(PROC_BASED_CONTROLS, proc_ctl)?;
    v.write(SECONDARY_PROC_CONTROLS, proc2_ctl)?;
    v.write(EXIT_CONTROLS, exit_ctl)?;
    v.write(ENTRY_CONTROLS, entry_ctl & !entry::IA32E_MODE_GUEST)?;
    v.write(EXCEPTION_BITMAP, 0)?;
    v.write(CR3_TARGET_COUNT, 0)?;
    v.write(EXIT_MSR_STORE_COUNT, 0)?;
    v.write(EXIT_MSR_LOAD_COUNT, 0)?;
    v.write(ENTRY_MSR_LOAD_COUNT, 0)?;
    v.write(ENTRY_INTR_INFO, 0)?;
    v.write(VMCS_LINK_POINTER, u64::MAX)?;
    v.write(EPT_POINTER, eptp)?;
    v.write(MSR_BITMAP, msr_bitmap)?;
    v.write(TSC_OFFSET, 0)?;
    if let Some(id) = vpid {
        v.write(VPID, id)?;
    }
    // CR0/CR4 bits the host owns: reads return the shadow, writes that
    // would change them exit (exits/cr.rs). CR0.NE must stay 1 and CD/NW 0
    // in VMX; CR4.VMXE must stay 1 but the guest must not see it.
    v.write(CR0_GUEST_HOST_MASK, Natural(CR0_NE | CR0_CD | CR0_NW | (caps.cr0_fixed0 & !(CR0_PE | CR0_PG))))?;
    v.write(CR4_GUEST_HOST_MASK, Natural(caps.cr4_fixed0 | CR4_VMXE | !caps.cr4_fixed1))
}

/// Host state that is the same on every CPU and for every thread.
fn setup_host_constant_state(v: &mut Loaded<'_>) -> Result {
    let (cs, ss) = hw::read_cs_ss();
    v.write(HOST_CS_SELECTOR, cs)?;
    v.write(HOST_SS_SELECTOR, ss)?;
    // Null data selectors are allowed in the host state and are what a
    // 64-bit kernel runs with; DS/ES are put back after each guest section.
    v.write(HOST_DS_SELECTOR, 0)?;
    v.write(HOST_ES_SELECTOR, 0)?;
    v.write(HOST_FS_SELECTOR, 0)?;
    v.write(HOST_GS_SELECTOR, 0)?;
    v.write(HOST_TR_SELECTOR, hw::str_selector())?;
    v.write(HOST_CR0, Natural(hw::read_cr0()))?;
    v.write(HOST_IDTR_BASE, Natural(hw::sidt().base))?;
    // SAFETY (all reads): architectural MSRs present on every x86-64 CPU.
    unsafe {
        // CAST: IA32_SYSENTER_CS holds a selector in its low bits.
        v.write(HOST_IA32_SYSENTER_CS, msr::rdmsr(msr::IA32_SYSENTER_CS) as u32)?;
        v.write(HOST_IA32_SYSENTER_EIP, Natural(msr::rdmsr(msr::IA32_SYSENTER_EIP)))?;
        v.write(HOST_IA32_EFER, msr::rdmsr(msr::IA32_EFER))?;
        v.write(HOST_IA32_PAT, msr::rdmsr(msr::IA32_PAT))?;
    }
    // Only the address of the label is taken; nothing is read.
    let exit_rip = core::ptr::addr_of!(rvmx_vmexit) as u64;
    v.write(HOST_RIP, Natural(exit_rip))
}

/// Host state that differs between CPUs (GDT, TSS, per-CPU GS base, entry
/// stack) or threads (FS base): written at the start of each guest section.
fn setup_host_cpu_state(v: &mut Loaded<'_>) -> Result {
    v.write(HOST_GDTR_BASE, Natural(hw::sgdt().base))?;
    v.write(HOST_TR_BASE, Natural(hw::tss_base()))?;
    // SAFETY (all reads): architectural MSRs present on every x86-64 CPU.
    unsafe {
        v.write(HOST_FS_BASE, Natural(msr::rdmsr(msr::IA32_FS_BASE)))?;
        v.write(HOST_GS_BASE, Natural(msr::rdmsr(msr::IA32_GS_BASE)))?;
        v.write(HOST_IA32_SYSENTER_ESP, Natural(msr::rdmsr(msr::IA32_SYSENTER_ESP)))
    }
}

/// Writes the guest's CR0: the VMCS holds what the CPU runs with (NE forced
/// on, CD/NW off, as KVM does), the read shadow what the guest believes.
pub(crate) fn set_cr0(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, cr0: u64) -> Result {
    let forced = caps.cr0_fixed0 & !(CR0_PE | CR0_PG);
    v.write(CR0_READ_SHADOW, Natural(cr0))?;
    v.write(GUEST_CR0, Natural((cr0 & !(CR0_CD | CR0_NW)) | forced))
}

/// Writes the guest's CR4 (VMXE forced on but hidden by the shadow).
pub(crate) fn set_cr4(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, cr4: u64) -> Result {
    v.write(CR4_READ_SHADOW, Natural(cr4))?;
    v.write(GUEST_CR4, Natural(cr4 | caps.cr4_fixed0))
}

/// Whether the guest uses 32-bit PAE paging (CR0.PG, CR4.PAE, not long
/// mode): then VM entry loads its PDPTEs from the VMCS.
pub(crate) fn pae_paging(v: &Loaded<'_>) -> bool {
    v.read(CR0_READ_SHADOW).0 & CR0_PG != 0
        && v.read(CR4_READ_SHADOW).0 & CR4_PAE != 0
        && v.read(GUEST_IA32_EFER) & EFER_LMA == 0
}

fn write_pdptes(v: &mut Loaded<'_>, p: &[u64; 4]) -> Result {
    v.write(GUEST_PDPTE0, p[0])?;
    v.write(GUEST_PDPTE1, p[1])?;
    v.write(GUEST_PDPTE2, p[2])?;
    v.write(GUEST_PDPTE3, p[3])
}

/// The "IA-32e mode guest" VM-entry control must match EFER.LMA.
pub(crate) fn set_long_mode(v: &mut Loaded<'_>, on: bool) -> Result {
    let e = v.read(ENTRY_CONTROLS);
    let bit = controls::entry::IA32E_MODE_GUEST;
    v.write(ENTRY_CONTROLS, if on { e | bit } else { e & !bit })
}

/// The architectural reset state (SDM Vol. 3A §10.1.1, table 10-1), as KVM
/// sets it: real mode, CS.base 0xffff0000, IP 0xfff0.
fn reset_guest_state(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps) -> Result {
    let data = segment(0, 0, 0xffff, 3, 1);
    write_seg(v, &GUEST_CS, &segment(0xf000, 0xffff_0000, 0xffff, 11, 1))?;
    for f in [&GUEST_DS, &GUEST_ES, &GUEST_FS, &GUEST_GS, &GUEST_SS] {
        write_seg(v, f, &data)?;
    }
    write_seg(v, &GUEST_LDTR, &segment(0, 0, 0xffff, 2, 0))?;
    write_seg(v, &GUEST_TR, &segment(0, 0, 0xffff, 11, 0))?;
    v.write(GUEST_GDTR_BASE, Natural(0))?;
    v.write(GUEST_GDTR_LIMIT, 0xffff)?;
    v.write(GUEST_IDTR_BASE, Natural(0))?;
    v.write(GUEST_IDTR_LIMIT, 0xffff)?;
    v.write(GUEST_RIP, Natural(0xfff0))?;
    v.write(GUEST_RSP, Natural(0))?;
    v.write(GUEST_RFLAGS, Natural(RFLAGS_FIXED))?;
    set_cr0(v, caps, CR0_CD | CR0_NW | (1 << 4))?;
    set_cr4(v, caps, 0)?;
    v.write(GUEST_CR3, Natural(0))?;
    v.write(GUEST_DR7, Natural(0x400))?;
    v.write(GUEST_IA32_EFER, 0)?;
    v.write(GUEST_IA32_PAT, 0x0007_0406_0007_0406)?;
    v.write(GUEST_SYSENTER_CS, 0)?;
    v.write(GUEST_SYSENTER_ESP, Natural(0))?;
    v.write(GUEST_SYSENTER_EIP, Natural(0))?;
    v.write(GUEST_INTERRUPTIBILITY, 0)?;
    v.write(GUEST_ACTIVITY_STATE, 0)?;
    v.write(GUEST_PENDING_DBG_EXCEPTIONS, Natural(0))
}

impl VcpuState {
    pub(crate) fn regs_mut(&mut self) -> &mut [u64; 16] {
        &mut self.regs
    }
}
