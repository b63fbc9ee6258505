// SPDX-License-Identifier: GPL-2.0

//! How a vCPU's VMCS is filled in: the execution, exit and entry controls
//! (from what rvmx wants and what the capability MSRs allow), the host
//! state VM exit returns to, the architectural reset state of the guest,
//! segments and the PDPTEs of PAE paging (CR0/CR4 with their shadows and
//! long mode are in vmcs/guest.rs, which the exit handlers share).

use super::RFLAGS_FIXED;
use crate::addr::Hpa;
use crate::hw::{self, cr::*, msr};
use crate::uapi::kvm_segment;
use crate::vmcs::guest::{set_cr0, set_cr4};
use crate::vmcs::intr::IntrInfo;
use crate::vmcs::{controls, fields::*, Loaded};
use kernel::prelude::*;

extern "C" {
    static rvmx_vmexit: u8;
}

/// The VMCS access rights of a KVM segment. Like KVM's
/// `__vmx_set_segment`, every segment but LDTR gets its "accessed" type
/// bit set: the CPU's reset state has it, VM entry requires it of an
/// unrestricted guest's data segments (SDM Vol. 3C §27.3.1.2), and older
/// VMMs (QEMU) leave it clear.
fn seg_ar(s: &kvm_segment, accessed: bool) -> u32 {
    if s.unusable != 0 || s.present == 0 {
        return 1 << 16;
    }
    u32::from(s.type_ & 15 | u8::from(accessed))
        | u32::from(s.s & 1) << 4
        | u32::from(s.dpl & 3) << 5
        | u32::from(s.present & 1) << 7
        | u32::from(s.avl & 1) << 12
        | u32::from(s.l & 1) << 13
        | u32::from(s.db & 1) << 14
        | u32::from(s.g & 1) << 15
}

pub(super) fn write_seg(v: &mut Loaded<'_>, f: &SegmentFields, s: &kvm_segment) -> Result {
    v.write(f.selector, s.selector)?;
    v.write(f.base, Natural(s.base))?;
    v.write(f.limit, s.limit)?;
    let accessed = f.selector != GUEST_LDTR.selector;
    v.write(f.access_rights, seg_ar(s, accessed))
}

pub(super) fn read_seg(v: &Loaded<'_>, f: &SegmentFields) -> kvm_segment {
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

/// The longest run of guest code between two looks at the host's signals
/// and scheduler, in TSC ticks: 2^23, about 3 ms at 3 GHz (about 40 ms of
/// emulated time under Bochs, where a tick is an instruction).
const MAX_GUEST_TICKS: u64 = 1 << 23;

/// The execution controls, from what rvmx wants and what the CPU allows.
pub(super) fn setup_controls(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps, eptp: u64, msr_bitmap: Hpa, vpid: Option<u16>) -> Result {
    use controls::*;
    let pin_ctl = caps.pin.adjust(
        "pin-based",
        pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
        pin::VIRTUAL_NMIS | pin::PREEMPTION_TIMER,
    )?;
    let mut proc_ctl = caps.proc.adjust(
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
    let proc2_ctl = caps.proc2.adjust("secondary", proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::WBINVD_EXITING | vpid_ctl, proc2::ENABLE_RDTSCP)?;
    let exit_ctl = caps.exit.adjust(
        "VM-exit",
        exit::HOST_ADDRESS_SPACE_SIZE | exit::SAVE_DEBUG_CONTROLS | exit::SAVE_IA32_EFER | exit::LOAD_IA32_EFER,
        exit::SAVE_IA32_PAT | exit::LOAD_IA32_PAT,
    )?;
    let entry_ctl = caps.entry.adjust("VM-entry", entry::LOAD_IA32_EFER | entry::LOAD_DEBUG_CONTROLS, entry::LOAD_IA32_PAT)?;
    v.write(PIN_BASED_CONTROLS, pin_ctl)?;
    if pin_ctl & pin::PREEMPTION_TIMER != 0 {
        // A guest section lasts at most MAX_GUEST_TICKS TSC ticks before the
        // run loop looks at signals and the scheduler again, whatever the
        // guest does. On hardware the external-interrupt exit already ends
        // it; Bochs 2.7 takes that exit only while the guest has RFLAGS.IF
        // set, so a guest spinning with CLI (random code does) would keep
        // the CPU and ignore SIGKILL. Without "save VMX-preemption timer
        // value" every entry reloads this count: no write per entry.
        v.write(VMX_PREEMPTION_TIMER_VALUE, (MAX_GUEST_TICKS >> caps.preemption_timer_rate) as u32)?;
    }
    v.write(PROC_BASED_CONTROLS, proc_ctl)?;
    v.write(SECONDARY_PROC_CONTROLS, proc2_ctl)?;
    v.write(EXIT_CONTROLS, exit_ctl)?;
    v.write(ENTRY_CONTROLS, entry_ctl & !entry::IA32E_MODE_GUEST)?;
    // The guest exceptions that exit: #MC, a hardware error the host must
    // handle (exits/interrupt.rs), and #DB and #AC, whose delivery a guest
    // can make endless, which would keep this CPU from the host for good
    // (exits/exception.rs says how).
    v.write(EXCEPTION_BITMAP, crate::exits::exception::INTERCEPTED)?;
    v.write(CR3_TARGET_COUNT, 0)?;
    v.write(EXIT_MSR_STORE_COUNT, 0)?;
    v.write(EXIT_MSR_LOAD_COUNT, 0)?;
    v.write(ENTRY_MSR_LOAD_COUNT, 0)?;
    v.write(ENTRY_INTR_INFO, IntrInfo::NONE)?;
    v.write(VMCS_LINK_POINTER, u64::MAX)?;
    v.write(EPT_POINTER, eptp)?;
    v.write(MSR_BITMAP, msr_bitmap.0)?;
    v.write(TSC_OFFSET, 0)?;
    if let Some(id) = vpid {
        v.write(VPID, id)?;
    }
    // CR0/CR4 bits the host owns: reads return the shadow, writes that
    // would change them exit (exits/cr.rs). CR0.NE must stay 1 and CD/NW 0
    // in VMX; CR4.VMXE must stay 1 but the guest must not see it; CR4.MCE
    // stays the host's (`set_cr4`).
    v.write(CR0_GUEST_HOST_MASK, Natural(CR0_NE | CR0_CD | CR0_NW | (caps.cr0_fixed0 & !(CR0_PE | CR0_PG))))?;
    v.write(CR4_GUEST_HOST_MASK, Natural(caps.cr4_fixed0 | CR4_VMXE | CR4_MCE | CR4_NOT_VIRTUALIZED | !caps.cr4_fixed1))
}

/// Host state that is the same on every CPU and for every thread.
pub(super) fn setup_host_constant_state(v: &mut Loaded<'_>) -> Result {
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
    // SAFETY: (all reads) architectural MSRs present on every x86-64 CPU.
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

pub(super) fn write_pdptes(v: &mut Loaded<'_>, p: &[u64; 4]) -> Result {
    v.write(GUEST_PDPTE0, p[0])?;
    v.write(GUEST_PDPTE1, p[1])?;
    v.write(GUEST_PDPTE2, p[2])?;
    v.write(GUEST_PDPTE3, p[3])
}

/// The architectural reset state (SDM Vol. 3A §10.1.1, table 10-1), as KVM
/// sets it: real mode, CS.base 0xffff0000, IP 0xfff0.
pub(super) fn reset_guest_state(v: &mut Loaded<'_>, caps: &crate::caps::VmxCaps) -> Result {
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
    // The guest runs with DR7 = 0x400 (no breakpoint armed) and DEBUGCTL 0
    // whatever it writes: its debug registers live in `Guest::debug`
    // (exits/dr.rs).
    v.write(GUEST_DR7, Natural(0x400))?;
    v.write(GUEST_IA32_DEBUGCTL, 0)?;
    v.write(GUEST_IA32_EFER, 0)?;
    v.write(GUEST_IA32_PAT, 0x0007_0406_0007_0406)?;
    v.write(GUEST_SYSENTER_CS, 0)?;
    v.write(GUEST_SYSENTER_ESP, Natural(0))?;
    v.write(GUEST_SYSENTER_EIP, Natural(0))?;
    v.write(GUEST_INTERRUPTIBILITY, 0)?;
    v.write(GUEST_ACTIVITY_STATE, 0)?;
    v.write(GUEST_PENDING_DBG_EXCEPTIONS, Natural(0))
}
