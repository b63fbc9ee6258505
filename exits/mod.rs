// SPDX-License-Identifier: GPL-2.0

//! VM exits: why the CPU left the guest, and what rvmx does about it.
//!
//! The VMCS EXIT_REASON field's bits 15:0 are the *basic exit reason* (SDM
//! Vol. 3D, Appendix C); `HANDLERS` maps each reason rvmx handles to its
//! handler, one file per family:
//!
//! | reason                              | file            | result                    |
//! |-------------------------------------|-----------------|---------------------------|
//! | 0 NMI or #MC, 1 external interrupt  | interrupt.rs    | host handles it, resume   |
//! | 0 guest #DB, #AC                    | exception.rs    | injected again, or KVM_EXIT_INTERNAL_ERROR |
//! | 2 triple fault                      | interrupt.rs    | KVM_EXIT_SHUTDOWN         |
//! | 7 interrupt window                  | interrupt.rs    | inject, or KVM_EXIT_IRQ_WINDOW_OPEN |
//! | 8 NMI window                        | interrupt.rs    | inject the pending NMI    |
//! | 10 CPUID                            | cpuid.rs        | answered in the kernel    |
//! | 12 HLT                              | hlt.rs          | KVM_EXIT_HLT              |
//! | 18 VMCALL                           | vmcall.rs       | KVM_EXIT_HYPERCALL        |
//! | 19-27, 50, 53, 59 VMX instructions  | vmx_insn.rs     | #UD injected, resume      |
//! | 28 control-register access (CR0/4/8) | cr.rs           | emulated, resume          |
//! | 29 debug-register access (MOV DR)   | dr.rs           | emulated, resume          |
//! | 30 I/O instruction (and INS/OUTS)    | io.rs           | KVM_EXIT_IO               |
//! | 31 RDMSR, 32 WRMSR                  | msr.rs          | emulated, or #GP          |
//! | 48 EPT violation                    | ept.rs, mmio.rs, decode.rs | memory mapped, or MMIO |
//! | 54 WBINVD, WBNOINVD                 | wbinvd.rs       | skipped (no host flush)   |
//! | 55 XSETBV                           | xsetbv.rs       | guest XCR0 set, or #GP    |
//! | anything else                       | this file       | KVM_EXIT_INTERNAL_ERROR   |
//! | 33, 34 failed VM entry (bit 31), VMfailValid | entry_failure.rs | KVM_EXIT_FAIL_ENTRY, the broken SDM check named |
//!
//! A handler runs right after the exit, with the VMCS loaded, preemption
//! off and interrupts on: it must not sleep. What needs to sleep (mapping
//! guest memory, reading it to decode an MMIO instruction) is returned as an
//! `Action` and done by the run loop outside the guest section (vcpu/run.rs).
//! Every exit reads the exit reason and the IDT-vectoring information;
//! each handler reads what its own exit needs.

pub(crate) mod cpuid;
pub(crate) mod decode;
pub(crate) mod dr;
pub(crate) mod cr;
pub(crate) mod ept;
pub(crate) mod entry_failure;
pub(crate) mod exception;
pub(crate) mod exception_rules;
pub(crate) mod hlt;
pub(crate) mod interrupt;
pub(crate) mod io;
pub(crate) mod mmio;
pub(crate) mod msr;
pub(crate) mod mwait;
pub(crate) mod rdpmc;
pub(crate) mod vmcall;
pub(crate) mod vmx_insn;
pub(crate) mod wbinvd;
pub(crate) mod xsetbv;

use crate::gmem;
use crate::kglue::rvmx_glue_raw_cpu_id;
use crate::uapi::{self, PioPage, RunPage};
use crate::guest::{reg, Guest};
use crate::vm::Vm;
use crate::vmcs::intr::{kind, IntrInfo};
use crate::vmcs::{fields::*, Loaded, Vmcs};
use kernel::prelude::*;

/// What the run loop does after a handler.
pub(crate) enum Action {
    /// Enter the guest again.
    Resume,
    /// Return from KVM_RUN; kvm_run.exit_reason says why.
    ToUser,
    /// Leave the guest section and handle an EPT violation (may sleep).
    EptViolation(ept::EptFault),
    /// Leave the guest section and start a string I/O (may sleep).
    StringIo(io::StringIo),
    /// Leave the guest section and load the PDPTEs from the table at this
    /// guest-physical CR3 (PAE paging was turned on; may sleep).
    LoadPdptes(u64),
    /// Leave the guest section and let the kernel handle a split lock the
    /// guest's instruction at `rip` raised (#AC with error code `code`;
    /// may sleep: exceptions.rs).
    SplitLock { rip: u64, code: u32 },
}

/// Instruction state left open by an exit to userspace, finished at the
/// next KVM_RUN with what userspace put in the run page.
#[derive(Clone, Copy)]
pub(crate) enum Pending {
    None,
    /// An IN: the data is in the port-I/O page; RIP was already advanced.
    PioIn { size: u8 },
    /// A VMCALL: kvm_run.hypercall.ret goes to RAX; RIP already advanced.
    Hypercall,
    /// An MMIO access: a read's data goes to a register; RIP advances by
    /// `len` at the next entry.
    /// `ram` says how a page-crossing access is put together; `write` is
    /// the whole value of a store (for a second device fragment).
    Mmio { len: u8, dest: Option<mmio::Dest>, ram: mmio::RamPart, write: Option<u64> },
    /// A string IN: the data goes to guest memory.
    StringIn(io::StringIn),
}

/// What a handler sees.
pub(crate) struct ExitCtx<'a, 'b> {
    pub(crate) vmcs: &'a mut Loaded<'b>,
    /// Guest general-purpose registers (RSP is in the VMCS).
    pub(crate) regs: &'a mut [u64; 16],
    /// Guest state outside the VMCS: MSRs, CR8, XCR0, CPUID table,
    /// interrupt queue.
    pub(crate) guest: &'a mut Guest,
    pub(crate) run: RunPage,
    /// The port-I/O data page (kvm_run + KVM_PIO_PAGE_OFFSET pages).
    pub(crate) pio: PioPage,
    pub(crate) pending: &'a mut Pending,
    pub(crate) vcpu_id: u32,
    /// IA32_VMX_BASIC[54]: INS/OUTS exits report instruction information.
    pub(crate) ins_outs_info: bool,
}

impl ExitCtx<'_, '_> {
    /// Completes the instruction that caused the exit, which rvmx
    /// emulated: RIP moves past it, and with RFLAGS.TF set the guest gets
    /// its single-step #DB, as after any instruction (exception.rs).
    pub(crate) fn skip_instruction(&mut self) -> Result {
        self.advance_rip()?;
        exception::single_step_after_emulation(self.vmcs, &mut self.guest.debug)
    }

    /// Moves RIP past the instruction that caused the exit, ending an STI
    /// or MOV SS shadow, and nothing else.
    pub(crate) fn advance_rip(&mut self) -> Result {
        let len = self.vmcs.read(EXIT_INSTRUCTION_LEN);
        let rip = self.vmcs.read(GUEST_RIP).0;
        self.vmcs.write(GUEST_RIP, Natural(rip.wrapping_add(u64::from(len))))?;
        crate::vmcs::guest::clear_interrupt_shadow(self.vmcs)
    }

    /// Drops the guest's cached linear translations on this CPU, as a MOV
    /// to CR0 or CR4 that changes paging does on bare metal when the CPU
    /// executes it (rvmx emulated it instead). Without a VPID every VM entry
    /// flushes them anyway.
    pub(crate) fn flush_guest_tlb(&mut self) -> Result {
        if self.guest.vpid != 0 && crate::hw::vmx::invvpid_single(self.guest.vpid).is_err() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Writes general-purpose register `n` (RSP goes to the VMCS).
    pub(crate) fn set_gpr(&mut self, n: usize, v: u64) -> Result {
        if n == reg::RSP {
            self.vmcs.write(GUEST_RSP, Natural(v))
        } else {
            self.regs[n] = v;
            Ok(())
        }
    }

    /// Sets kvm_run.exit_reason.
    pub(crate) fn exit_to_user(&mut self, reason: u32) -> Action {
        self.run.set_exit_reason(reason);
        Action::ToUser
    }

    /// Reads general-purpose register `n` (RSP comes from the VMCS).
    pub(crate) fn gpr(&self, n: usize) -> u64 {
        if n == reg::RSP { self.vmcs.read(GUEST_RSP).0 } else { self.regs[n] }
    }

    /// Queues a hardware exception for delivery at the next VM entry (SDM
    /// Vol. 3C §27.6, "Event Injection"): vector, type 3 (hardware
    /// exception), error code if `code` is given, valid bit.
    pub(crate) fn inject_exception(&mut self, vector: u8, code: Option<u32>) -> Result<Action> {
        queue_new_exception(self.vmcs, vector, code)?;
        Ok(Action::Resume)
    }

    /// KVM_EXIT_INTERNAL_ERROR: rvmx cannot handle this exit; the raw
    /// reason and the CPU go to userspace (`data[0]`, `data[1]`), as KVM
    /// reports an unexpected exit reason.
    pub(crate) fn internal_error(&mut self, suberror: u32, reason: u32) -> Action {
        report_internal_error(self.run, suberror, reason);
        Action::ToUser
    }
}

/// What the second half of an exit sees: the work a handler handed back
/// as an `Action` (mapping memory aside), or left `Pending` for the next
/// KVM_RUN, which the run loop does outside the guest section because it
/// may sleep (reading guest memory). Like `ExitCtx`, it lends only the
/// pieces of the vCPU this work touches; the VMCS is loaded on demand
/// (the vCPU may have moved to another CPU since the exit).
pub(crate) struct EmulCtx<'a> {
    pub(crate) vmcs: &'a mut Vmcs,
    /// Guest general-purpose registers (RSP is in the VMCS).
    pub(crate) regs: &'a mut [u64; 16],
    /// The guest's CR2 (VMX does not switch it): a queued #PF sets it.
    pub(crate) cr2: &'a mut u64,
    pub(crate) pending: &'a mut Pending,
    /// Bytes to advance RIP by at the next entry.
    pub(crate) rip_advance: &'a mut u64,
    /// The VM: its guest memory (gmem.rs reads and writes through it).
    pub(crate) vm: &'a Vm,
    pub(crate) run: RunPage,
    /// The port-I/O data page.
    pub(crate) pio: PioPage,
}

impl EmulCtx<'_> {
    /// Queues a hardware exception for the next VM entry: an access rvmx
    /// performed for the guest (string I/O, an instruction fetch for MMIO
    /// decoding) failed the checks the CPU would have made. RIP stays at
    /// the instruction, as for any fault; a #PF also sets the guest's CR2.
    pub(crate) fn queue_exception(&mut self, vector: u8, code: Option<u32>, cr2: Option<u64>) -> Result {
        let mut v = self.vmcs.load()?;
        queue_new_exception(&mut v, vector, code)?;
        if let Some(a) = cr2 {
            *self.cr2 = a;
        }
        Ok(())
    }

    /// Injects what a failed linear access of gmem.rs means for the guest:
    /// #PF for a page fault; `false` (nothing injected) when rvmx cannot
    /// emulate the access and must say so to userspace.
    pub(crate) fn inject_linear_fault(&mut self, e: gmem::LinearError) -> Result<bool> {
        match e {
            gmem::LinearError::PageFault { addr, code } => {
                self.queue_exception(crate::vmcs::intr::vector::PF, Some(code), Some(addr.0))?;
                Ok(true)
            }
            gmem::LinearError::Unhandled => Ok(false),
        }
    }
}


/// Fills the run page for KVM_EXIT_INTERNAL_ERROR: the suberror, the raw
/// exit reason and the CPU (`data[0]`, `data[1]`).
pub(crate) fn report_internal_error(run: RunPage, suberror: u32, reason: u32) {
    run.exit_internal_error(suberror, &[u64::from(reason), u64::from(raw_cpu())]);
}

pub(crate) fn raw_cpu() -> u32 {
    // SAFETY: reads the current CPU's number.
    unsafe { rvmx_glue_raw_cpu_id() }
}

/// The VM-entry interruption information that injects hardware exception
/// `vector`, and the error code to put with it. VM entry requires the
/// deliver-error-code bit to be set exactly for #DF, #TS, #NP, #SS, #GP,
/// #PF and #AC in protected mode (SDM Vol. 3C §27.2.1.3; with unrestricted
/// guest, CR0.PE = 0 is real mode, where exceptions push no error code):
/// any other combination fails the entry as an "invalid control field".
/// So `code` is dropped where none is delivered, as KVM's
/// kvm_inject_exception drops it in real mode, and is 0 where one must be.
pub(crate) fn exception_info(vector: u8, code: Option<u32>, guest_cr0: u64) -> (IntrInfo, Option<u32>) {
    if guest_cr0 & 1 != 0 && matches!(vector, 8 | 10..=14 | 17) {
        // Bits 31:16 of the entry's error code must be 0 (SDM Vol. 3C
        // §27.2.1.3); a VMM may ask for any 32 bits (KVM_SET_VCPU_EVENTS),
        // and KVM drops the high half, as here.
        (IntrInfo::event(kind::HARDWARE_EXCEPTION, vector, true), Some(code.unwrap_or(0) & 0xffff))
    } else {
        (IntrInfo::event(kind::HARDWARE_EXCEPTION, vector, false), None)
    }
}

/// Queues hardware exception `vector`, which rvmx raises itself (rather
/// than re-injecting one the guest's delivery was interrupted in), for the
/// next VM entry. For a fault the guest's RFLAGS gets RF, as the CPU sets
/// it in the image it pushes (exception_rules.rs), as KVM does when it
/// injects a new fault: VM entry's injection pushes RFLAGS as it is.
fn queue_new_exception(v: &mut Loaded<'_>, vector: u8, code: Option<u32>) -> Result {
    let (info, code) = exception_info(vector, code, v.read(GUEST_CR0).0);
    if let Some(c) = code {
        v.write(ENTRY_EXCEPTION_ERROR_CODE, c)?;
    }
    if exception_rules::is_fault(vector) {
        let rflags = v.read(GUEST_RFLAGS).0;
        v.write(GUEST_RFLAGS, Natural(rflags | exception_rules::RFLAGS_RF))?;
    }
    v.write(ENTRY_INTR_INFO, info)
}

/// A handler for one basic exit reason.
type Handler = fn(&mut ExitCtx<'_, '_>) -> Result<Action>;

/// Basic exit reasons (vmcs/exit_reason.rs).
pub(crate) use crate::vmcs::exit_reason as reason;

/// The dispatch table: basic exit reason → handler.
static HANDLERS: [Option<Handler>; reason::COUNT] = {
    let mut t: [Option<Handler>; reason::COUNT] = [None; reason::COUNT];
    t[reason::EXCEPTION_OR_NMI as usize] = Some(exception::exception_or_nmi);
    t[reason::EXTERNAL_INTERRUPT as usize] = Some(interrupt::external_interrupt);
    t[reason::TRIPLE_FAULT as usize] = Some(interrupt::triple_fault);
    t[reason::PREEMPTION_TIMER as usize] = Some(interrupt::preemption_timer);
    t[reason::INTERRUPT_WINDOW as usize] = Some(interrupt::interrupt_window);
    t[reason::NMI_WINDOW as usize] = Some(interrupt::nmi_window);
    t[reason::CPUID as usize] = Some(cpuid::cpuid);
    t[reason::HLT as usize] = Some(hlt::hlt);
    t[reason::INVD as usize] = Some(wbinvd::invd);
    t[reason::RDPMC as usize] = Some(rdpmc::rdpmc);
    t[reason::VMCALL as usize] = Some(vmcall::vmcall);
    t[reason::VMCLEAR as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMLAUNCH as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMPTRLD as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMPTRST as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMREAD as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMRESUME as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMWRITE as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMXOFF as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMXON as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::INVEPT as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::INVVPID as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::VMFUNC as usize] = Some(vmx_insn::vmx_instruction);
    t[reason::CR_ACCESS as usize] = Some(cr::cr_access);
    t[reason::DR_ACCESS as usize] = Some(dr::dr_access);
    t[reason::IO_INSTRUCTION as usize] = Some(io::io_instruction);
    t[reason::RDMSR as usize] = Some(msr::rdmsr);
    t[reason::WRMSR as usize] = Some(msr::wrmsr);
    t[reason::MWAIT as usize] = Some(mwait::monitor_or_mwait);
    t[reason::MONITOR as usize] = Some(mwait::monitor_or_mwait);
    t[reason::WBINVD as usize] = Some(wbinvd::wbinvd);
    t[reason::XSETBV as usize] = Some(xsetbv::xsetbv);
    t[reason::EPT_VIOLATION as usize] = Some(ept::ept_violation);
    t
};

/// Dispatches one VM exit; `full` is the EXIT_REASON field (the run loop
/// has read it already, and sent failed entries to entry_failure.rs).
pub(crate) fn handle(ctx: &mut ExitCtx<'_, '_>, full: u32) -> Result<Action> {
    reinject_interrupted_event(ctx)?;
    let basic = full & 0xffff;
    match HANDLERS.get(basic as usize).copied().flatten() {
        Some(h) => h(ctx),
        None => Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, basic)),
    }
}

/// An exit can interrupt the delivery of an event through the guest's IDT
/// (say, the IDT or the handler's stack was in a page EPT did not map yet).
/// The IDT-vectoring information field then holds the event; it must be
/// injected again at the next entry, or the guest loses it (SDM Vol. 3C
/// §28.2.4 and §27.6.1.1). This is the one VMREAD every exit pays for.
fn reinject_interrupted_event(ctx: &mut ExitCtx<'_, '_>) -> Result {
    let idt = ctx.vmcs.read(IDT_VECTORING_INFO);
    if !idt.valid() {
        return Ok(());
    }
    if idt.has_error_code() {
        let code = ctx.vmcs.read(IDT_VECTORING_ERROR_CODE);
        ctx.vmcs.write(ENTRY_EXCEPTION_ERROR_CODE, code)?;
    }
    // Software interrupts and exceptions (types 4, 5, 6) are re-executed
    // with the length of the instruction that raised them.
    if matches!(idt.kind(), kind::SOFTWARE_INTERRUPT | kind::PRIVILEGED_SOFTWARE_EXCEPTION | kind::SOFTWARE_EXCEPTION) {
        let len = ctx.vmcs.read(EXIT_INSTRUCTION_LEN);
        ctx.vmcs.write(ENTRY_INSTRUCTION_LEN, len)?;
    }
    // An NMI whose delivery was interrupted left the guest's (virtual) NMI
    // blocking set; it must be clear for the NMI to be injected again (SDM
    // Vol. 3C §28.2.4; KVM does the same).
    if idt.kind() == kind::NMI {
        crate::vmcs::guest::set_nmi_blocking(ctx.vmcs, false)?;
    }
    // Bit 12 is undefined in IDT-vectoring information and reserved in
    // the entry field.
    ctx.vmcs.write(ENTRY_INTR_INFO, idt.without_nmi_unblocking())
}

/// Completes, at the next KVM_RUN, the instruction whose exit userspace
/// handled (the "complete_userspace_io" of KVM). Returns true when that
/// itself ends in an exit to userspace (the run page says which).
pub(crate) fn complete_pending(cx: &mut EmulCtx<'_>) -> Result<bool> {
    let pending = core::mem::replace(cx.pending, Pending::None);
    let run = cx.run;
    match pending {
        Pending::None => {}
        Pending::PioIn { size } => {
            let mut data = [0u8; 8];
            cx.pio.read(0, &mut data[..usize::from(size)]);
            let v = u64::from_le_bytes(data);
            cx.regs[reg::RAX] = mmio::merge(cx.regs[reg::RAX], v, size, false);
        }
        Pending::Hypercall => {
            cx.regs[reg::RAX] = run.hypercall_ret();
        }
        Pending::Mmio { len, dest, ram, write } => {
            // The first of two device fragments: the second one's exit now.
            if let Some((gpa, second)) = ram.second_fragment(u64::from_le_bytes(run.mmio_data())) {
                run.exit_mmio(gpa.0, u32::from(second.device_len()), write.map(|v| second.device_bytes(v)));
                *cx.pending = Pending::Mmio { len, dest, ram: second, write };
                return Ok(true);
            }
            if let Some(d) = dest {
                mmio::complete_read(cx.regs, d, ram.combine(u64::from_le_bytes(run.mmio_data())));
            }
            *cx.rip_advance = u64::from(len);
        }
        Pending::StringIn(p) => return io::complete_string_in(cx, &p),
    }
    Ok(false)
}
