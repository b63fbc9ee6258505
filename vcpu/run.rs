// SPDX-License-Identifier: GPL-2.0

//! The run loop: KVM_RUN, its guest sections (VM entry in vmenter.S, the
//! exit dispatched to exits/, back in or out to userspace), and what must
//! be switched around a section (FPU, MSRs, debug registers, segments).

use super::*;
use crate::kglue::{
    rvmx_glue_cond_resched, rvmx_glue_fpu_begin, rvmx_glue_fpu_end, rvmx_glue_handle_guest_split_lock, rvmx_glue_ibpb_on_vcpu_switch,
    rvmx_glue_irq_disable, rvmx_glue_irq_enable, rvmx_glue_need_resched, rvmx_glue_raw_cpu_id,
    rvmx_glue_restore_host_breakpoints, rvmx_glue_restore_host_descriptor_limits,
    rvmx_glue_restore_host_segments, rvmx_glue_save_host_segments, rvmx_glue_sigmask_activate,
    rvmx_glue_sigmask_deactivate, rvmx_glue_softirq_pending,
};

// vmenter.S (assembly, not kglue/): VMLAUNCH or VMRESUME, and the exit.
extern "C" {
    fn rvmx_vmenter(regs: *mut u64, resume: u32, host_rsp: *mut u64) -> i32;
}

/// kglue/kglue.h `struct rvmx_host_segments`: the VMM's FS/GS selectors, LDTR
/// and FS base, which a VM exit does not keep.
use crate::kglue::rvmx_host_segments as HostSegments;

/// The host values in the VMCS that may change under a loaded vCPU, as
/// last written: checked before each entry (CR3, CR4) or section (the FS
/// base, which is the thread's: another thread may run the vCPU next).
pub(super) struct HostCache {
    pub(super) cr3: u64,
    pub(super) cr4: u64,
    pub(super) fs_base: Option<u64>,
}

/// Local interrupts off on this CPU until dropped: a guest runs with the
/// host's interrupts off (they make it exit instead), and the host takes
/// the pending one when this guard goes.
struct IrqsOff(());

impl IrqsOff {
    fn new() -> Self {
        // SAFETY: paired with the enable in `drop`; nothing in the section
        // sleeps with interrupts off.
        unsafe { rvmx_glue_irq_disable() };
        IrqsOff(())
    }
}

impl Drop for IrqsOff {
    fn drop(&mut self) {
        // SAFETY: pairs with the disable in `new`.
        unsafe { rvmx_glue_irq_enable() };
    }
}

/// The kernel's FPU section (kernel_fpu_begin/end) for the length of a
/// guest section: the FPU registers are rvmx's to load the guest's into,
/// and preemption and bottom halves are off until dropped.
struct FpuSection(());

impl FpuSection {
    fn begin() -> Self {
        // SAFETY: paired with `rvmx_glue_fpu_end` in `drop`.
        unsafe { rvmx_glue_fpu_begin() };
        FpuSection(())
    }
}

impl Drop for FpuSection {
    fn drop(&mut self) {
        // SAFETY: pairs with `begin`, on the same CPU (preemption is off).
        unsafe { rvmx_glue_fpu_end() };
    }
}

/// The signals KVM_SET_SIGNAL_MASK asked to block while KVM_RUN runs,
/// blocked until dropped (then the thread's own mask is back).
struct SignalMask(());

impl SignalMask {
    fn block(mask: u64) -> Self {
        // SAFETY: `mask` is a sigset_t's 8 bytes, read during the call;
        // deactivated in `drop`.
        unsafe { rvmx_glue_sigmask_activate(&mask) };
        SignalMask(())
    }
}

impl Drop for SignalMask {
    fn drop(&mut self) {
        // SAFETY: pairs with the activation in `block`.
        unsafe { rvmx_glue_sigmask_deactivate() };
    }
}

impl Vcpu {
    /// KVM_RUN: runs the guest until an exit that userspace must handle.
    pub(crate) fn run(&self) -> Result {
        let run = self.run_page();
        let mut t = self.token()?;
        let st = t.state();
        st.ran = true;
        st.run_state_published = false;
        let blocked = st.sigmask.map(SignalMask::block);
        let r = self.run_locked(st, run);
        // kvm_run's if_flag and ready_for_interrupt_injection are exact on
        // every return, as KVM's post_kvm_run_save writes them: also when
        // KVM_RUN ends before the guest ran (immediate_exit, a pending
        // signal, an exit to userspace completed without an entry). A
        // userspace interrupt controller (QEMU's) decides from them whether
        // to inject with KVM_INTERRUPT or ask for a window.
        if !st.run_state_published {
            if let Ok(v) = st.vmcs.load() {
                self.publish_run_state(&v, &st.guest);
            }
        }
        self.stats.returned(&r, run);
        crate::trace::userspace_exit(self.id, run.exit_reason(), r.as_ref().err().map_or(0, |e| e.to_errno()));
        drop(blocked);
        run.set_cr8_apic_base(st.guest.cr8, st.guest.msrs.apic_base);
        r
    }

    fn run_locked(&self, st: &mut VcpuState, run: RunPage) -> Result {
        // Finish the instruction the last exit to userspace left open (the
        // data of an IN or an MMIO read, a hypercall's return value).
        if exits::complete_pending(&mut st.emul(&self.vm, run, self.pio_page()))? {
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
            if kernel::current!().signal_pending() {
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
                        if exits::mmio::start(&mut st.emul(&self.vm, run, self.pio_page()), &f)? {
                            return Ok(());
                        }
                    }
                },
                Section::StringIo(s) => {
                    if exits::io::start_string(&mut st.emul(&self.vm, run, self.pio_page()), &s)? {
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
                // The host's split-lock detection trapped a guest
                // instruction (exits/exception.rs): the kernel warns and
                // lets it go on, or says no, and then the VMM hears of the
                // #AC, as from KVM (KVM_EXIT_EXCEPTION).
                Section::SplitLock { rip, code } => {
                    // SAFETY: the kernel's handler for exactly this case,
                    // called outside the guest section, where it may sleep.
                    let handled = unsafe { rvmx_glue_handle_guest_split_lock(rip) };
                    if !handled {
                        run.exit_exception(u32::from(crate::vmcs::intr::vector::AC), code);
                        return Ok(());
                    }
                }
            }
        }
    }

    fn pio_page(&self) -> uapi::PioPage {
        // SAFETY: page PIO_PAGE is the vCPU's port-I/O page and lives as
        // long as the vCPU, which outlives every use of the value.
        unsafe { uapi::PioPage::new(self.pages[PIO_PAGE].as_ptr()) }
    }

    /// One guest section (see the module comment): load the VMCS and the
    /// guest's FPU, and enter the guest until an exit needs userspace, needs
    /// to sleep, or the scheduler or a signal wants the CPU.
    fn guest_section(&self, st: &mut VcpuState) -> Result<Section> {
        let run = self.run_page();
        let fpu = FpuSection::begin();
        // SAFETY: we own the FPU registers now, the area is page-aligned and
        // sized for this XCR0 (checked at creation).
        unsafe { hw::xrstor(st.fpu.as_ptr(), st.guest.xfeatures) };
        // The guest's XCR0, checked against the host's at XSETBV. Nothing
        // else on this CPU uses XSAVE until it is put back: preemption is
        // off and the kernel's FPU is ours (kernel_fpu_begin).
        if st.guest.xcr0 != st.guest.host_xcr0 {
            hw::xsetbv(st.guest.xcr0);
        }
        // SAFETY: preemption is off until `leave_kernel_gs_base` below, and
        // the CPU stays in the kernel in between.
        let host_kernel_gs_base = unsafe { st.guest.msrs.enter_kernel_gs_base() };
        let (ds, es) = hw::read_ds_es();
        let mut segs = HostSegments::default();
        // SAFETY: fills `segs` from this CPU's segment registers and LDTR.
        unsafe { rvmx_glue_save_host_segments(&mut segs) };
        // SAFETY: reads this CPU's number; preemption is off.
        let cpu = unsafe { rvmx_glue_raw_cpu_id() };

        let result = (|| -> Result<Section> {
            // SAFETY: preemption is off until `section_end` below.
            unsafe { st.guest.msrs.load_deferred()? };
            let mut v = st.vmcs.load()?;
            // SAFETY: preemption is off (the VMCS is loaded on this CPU).
            unsafe { rvmx_glue_ibpb_on_vcpu_switch(st.uid) };
            // SAFETY: an architectural MSR; preemption is off.
            let fs_base = unsafe { msr::rdmsr(msr::IA32_FS_BASE) };
            if st.host.fs_base != Some(fs_base) {
                v.write(HOST_FS_BASE, Natural(fs_base))?;
                st.host.fs_base = Some(fs_base);
            }
            if let Some(vpid) = &st.vpid {
                if st.flush_tlb || st.last_cpu != Some(cpu) {
                    if crate::hw::vmx::invvpid_single(vpid.get()).is_err() {
                        pr_err!("INVVPID failed\n");
                        return Err(EIO);
                    }
                    st.flush_tlb = false;
                }
            }
            // A CPU the vCPU did not last run on may hold stale
            // translations of this VM's EPT (vm.rs, `RemoteFlush`): the
            // flush is owed until an entry makes it. It is kept in
            // `ept_gen` ("never flushed here"), not in a local, so that a
            // section that ends before its first entry (a signal, say)
            // does not forget it now that `last_cpu` says this CPU.
            if st.last_cpu != Some(cpu) {
                st.ept_gen = EPT_NEVER_FLUSHED;
            }
            st.last_cpu = Some(cpu);
            if let Some(p) = st.pdptes.take() {
                write_pdptes(&mut v, &p)?;
            }
            if st.rip_advance != 0 {
                let rip = v.read(GUEST_RIP).0;
                v.write(GUEST_RIP, Natural(rip.wrapping_add(st.rip_advance)))?;
                clear_interrupt_shadow(&mut v)?;
                exits::exception::single_step_after_emulation(&mut v, &mut st.guest.debug)?;
                st.rip_advance = 0;
            }
            // VMRESUME if the VMCS was launched on this CPU and stayed
            // active here since (vmcs/mod.rs), VMLAUNCH otherwise.
            let mut resume = u32::from(v.launched());
            // SAFETY: IA32_DEBUGCTL exists on every CPU with VMX (and the
            // thread stays on this CPU for the section).
            let host_debugctl = unsafe { msr::rdmsr(msr::IA32_DEBUGCTL) };
            let section = loop {
                let irqs = IrqsOff::new();
                // Leave the section for a signal, the scheduler, or pending
                // softirqs: the section runs with bottom halves disabled
                // (kernel_fpu_begin), so timers and RCU callbacks queued on
                // this CPU run only when it ends.
                // SAFETY: plain checks of the current task and CPU.
                if kernel::current!().signal_pending() || unsafe { rvmx_glue_need_resched() || rvmx_glue_softirq_pending() } {
                    drop(irqs);
                    break Section::Reschedule;
                }
                // Last VMCS updates before the entry, with interrupts off.
                prepare_entry(&mut v, &mut st.guest, &mut st.host, st.cr2, &self.stats)?;
                // Before the L1D flush, which must be the last thing that
                // touches memory before the entry.
                crate::trace::entry(&v, self.id, resume == 0);
                // From here to the exit this CPU counts as in the guest for
                // the VM's EPT flushes, which the vCPU honours here.
                let in_guest = self.vm.enter_guest(cpu).ok_or(EIO)?;
                if in_guest.gen() != st.ept_gen {
                    crate::hw::vmx::invept_single(self.vm.eptp()).map_err(|_| {
                        pr_err!("INVEPT failed\n");
                        EIO
                    })?;
                    st.ept_gen = in_guest.gen();
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
                drop(in_guest);
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
                // A pending host interrupt (the cause of an external-
                // interrupt exit) is delivered here.
                drop(irqs);
                if r != 0 {
                    self.stats.entry_failures.add(1);
                    let e = exits::entry_failure::vm_instruction_failed(&v, run, r, self.id);
                    self.publish_exit_info(&v, st.exits, e);
                    break Section::ToUser;
                }
                crate::trace::exit(&v, self.id, reason);
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
                // The guest ran: the VMCS is launched (a failed entry leaves
                // its launch state as it was, SDM Vol. 3C §28.8).
                if resume == 0 {
                    v.set_launched();
                    resume = 1;
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
                    Action::SplitLock { rip, code } => Section::SplitLock { rip, code },
                };
                self.publish_exit_info(&v, st.exits, Default::default());
                break section;
            };
            self.publish_run_state(&v, &st.guest);
            st.run_state_published = true;
            Ok(section)
        })();

        // Back to the host's world, in reverse order.
        hw::load_ds_es(ds, es);
        // SAFETY: the values saved above on this CPU (preemption is off);
        // before the VMM's GS base, which this resets, is put back.
        unsafe { rvmx_glue_restore_host_segments(&segs) };
        // SAFETY: the value `enter_kernel_gs_base` read on this CPU.
        unsafe { st.guest.msrs.leave_kernel_gs_base(host_kernel_gs_base) };
        // The other MSRs the guest changed stay until the return to user
        // mode (msrs/mod.rs, `DEFERRED`). SAFETY: preemption is still off.
        unsafe { crate::msrs::section_end() };
        if st.guest.xcr0 != st.guest.host_xcr0 {
            hw::xsetbv(st.guest.host_xcr0);
        }
        // SAFETY: we still own the FPU registers; same area as above.
        unsafe { hw::xsave(st.fpu.as_ptr(), st.guest.xfeatures) };
        // SAFETY: restores Linux's descriptor limits on this CPU (still
        // pinned: FPU section).
        unsafe { rvmx_glue_restore_host_descriptor_limits() };
        drop(fpu);
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
            intr_info: v.read(EXIT_INTR_INFO).0,
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
    /// A split-lock #AC for the kernel's handler (may sleep).
    SplitLock { rip: u64, code: u32 },
}
