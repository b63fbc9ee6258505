// SPDX-License-Identifier: GPL-2.0

//! Failed VM entries: VMLAUNCH/VMRESUME refused with VMfailValid (the
//! VM-instruction error says "invalid control field" or "invalid
//! host-state field"), or the entry started and failed its guest-state
//! checks (exit reason 33) or its MSR loading (34). The guest never ran.
//!
//! The CPU names only the class of the failure. rvmx copies the VMCS into
//! plain values, runs the SDM's checks over them (vmcs/checks.rs) and
//! reports the first broken rule three ways: one rate-limited kernel log
//! line, the exit-information page, and kvm_run (KVM_EXIT_FAIL_ENTRY with
//! rvmx's `struct rvmx_fail_entry` after KVM's fields). None of this is on
//! the path of an exit that succeeded.

use super::raw_cpu;
use crate::kglue::rvmx_glue_log_ratelimit;
use crate::caps::VmxCaps;
use crate::uapi::RunPage;
use crate::vmcs::checks::{self, Failure, Violation};
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;

/// VM-instruction errors 7 and 8 (SDM Vol. 3C §31.4).
const ERROR_INVALID_CONTROL: u32 = 7;
const ERROR_INVALID_HOST_STATE: u32 = 8;
/// Basic exit reasons of failed entries (SDM Vol. 3D Appendix C).
const REASON_INVALID_GUEST_STATE: u32 = 33;
const REASON_MSR_LOADING: u32 = 34;

/// What rvmx found about one failed entry (for the exit-information page).
#[derive(Clone, Copy, Default)]
pub(crate) struct Explained {
    pub(crate) vm_instruction_error: u32,
    pub(crate) check: u16,
    pub(crate) segment: u8,
    pub(crate) value: u64,
}

impl Explained {
    fn from(v: Option<Violation>, vm_instruction_error: u32) -> Self {
        match v {
            Some(v) => Explained {
                vm_instruction_error,
                check: v.check as u16,
                segment: v.segment.map_or(0, |s| s as u8),
                value: v.value,
            },
            None => Explained { vm_instruction_error, ..Default::default() },
        }
    }
}

/// The entry started and failed (EXIT_REASON bit 31 set): reason 33, 34
/// or 41. KVM_EXIT_FAIL_ENTRY with the full exit reason, as KVM reports it.
pub(crate) fn entry_failed_with_exit(v: &Loaded<'_>, run: RunPage, full: u32, vcpu: u32) -> Explained {
    let basic = full & 0xffff;
    let found = if basic == REASON_INVALID_GUEST_STATE { check(v, Failure::GuestState) } else { None };
    let what = match basic {
        REASON_INVALID_GUEST_STATE => "invalid guest state",
        REASON_MSR_LOADING => "MSR loading",
        _ => "machine check during entry",
    };
    report(run, vcpu, what, u64::from(full), found);
    if basic == REASON_MSR_LOADING {
        // The exit qualification is the 1-based index of the entry that
        // failed to load (SDM Vol. 3C §27.4).
        let index = v.read(EXIT_QUALIFICATION).0;
        return Explained { value: index, ..Explained::from(None, 0) };
    }
    Explained::from(found, 0)
}

/// VMLAUNCH/VMRESUME itself failed: `r` = 1 for VMfailValid (the
/// VM-instruction error names the class), 2 for VMfailInvalid or a fault
/// (no current VMCS: a bug in rvmx, not in the guest).
/// KVM_EXIT_FAIL_ENTRY with the VM-instruction error, as KVM reports it.
pub(crate) fn vm_instruction_failed(v: &Loaded<'_>, run: RunPage, r: i32, vcpu: u32) -> Explained {
    let err = if r == 1 { v.instruction_error() } else { 0 };
    let found = match err {
        ERROR_INVALID_CONTROL => check(v, Failure::Control),
        ERROR_INVALID_HOST_STATE => check(v, Failure::HostState),
        _ => None,
    };
    let what = match err {
        ERROR_INVALID_CONTROL => "invalid control field",
        ERROR_INVALID_HOST_STATE => "invalid host-state field",
        0 => "VMfailInvalid",
        _ => "VM-instruction error",
    };
    report(run, vcpu, what, u64::from(err), found);
    Explained::from(found, err)
}

fn report(run: RunPage, vcpu: u32, what: &str, hw: u64, found: Option<Violation>) {
    let e = Explained::from(found, 0);
    run.exit_fail_entry(hw, raw_cpu(), (e.check, e.segment, e.value));
    // SAFETY: a check of a static rate-limit state.
    if !unsafe { rvmx_glue_log_ratelimit() } {
        return;
    }
    match found {
        Some(f) => pr_info!(
            "vCPU {}: VM entry failed ({} {:#x}): check {} (SDM Vol. 3C {}){}{}: {}; value {:#x}\n",
            vcpu,
            what,
            hw,
            f.check as u16,
            f.check.section(),
            if f.segment.is_some() { " for " } else { "" },
            f.segment.map_or("", |s| s.name()),
            f.check.rule(),
            f.value
        ),
        None => pr_info!("vCPU {}: VM entry failed ({} {:#x}); no rule rvmx checks is broken\n", vcpu, what, hw),
    }
}

/// Copies the VMCS into the checker's values and runs its checks.
fn check(v: &Loaded<'_>, f: Failure) -> Option<Violation> {
    let caps = crate::vmxon::caps()?;
    let (g, h, c) = (guest(v), host(v), controls(v));
    checks::explain(f, &g, &h, &c, &cpu(&caps))
}

fn cpu(caps: &VmxCaps) -> checks::Cpu {
    let pair = |c: crate::caps::ControlCaps| (c.must_be_one, c.may_be_one);
    checks::Cpu {
        cr0_fixed0: caps.cr0_fixed0,
        cr0_fixed1: caps.cr0_fixed1,
        cr4_fixed0: caps.cr4_fixed0,
        cr4_fixed1: caps.cr4_fixed1,
        maxphyaddr: caps.maxphyaddr,
        linear_bits: caps.linear_bits,
        pin: pair(caps.pin),
        proc: pair(caps.proc),
        proc2: pair(caps.proc2),
        exit: pair(caps.exit),
        entry: pair(caps.entry),
        ept_vpid: caps.ept_vpid,
        misc: caps.misc,
    }
}

fn controls(v: &Loaded<'_>) -> checks::Controls {
    checks::Controls {
        pin: v.read(PIN_BASED_CONTROLS),
        proc: v.read(PROC_BASED_CONTROLS),
        proc2: v.read(SECONDARY_PROC_CONTROLS),
        exit: v.read(EXIT_CONTROLS),
        entry: v.read(ENTRY_CONTROLS),
        cr3_target_count: v.read(CR3_TARGET_COUNT),
        msr_bitmap: v.read(MSR_BITMAP),
        ept_pointer: v.read(EPT_POINTER),
        vpid: v.read(VPID),
        exit_msr_store: (v.read(EXIT_MSR_STORE_COUNT), v.read(EXIT_MSR_STORE_ADDR)),
        exit_msr_load: (v.read(EXIT_MSR_LOAD_COUNT), v.read(EXIT_MSR_LOAD_ADDR)),
        entry_msr_load: (v.read(ENTRY_MSR_LOAD_COUNT), v.read(ENTRY_MSR_LOAD_ADDR)),
        entry_intr_info: v.read(ENTRY_INTR_INFO).0,
        entry_error_code: v.read(ENTRY_EXCEPTION_ERROR_CODE),
        entry_instruction_len: v.read(ENTRY_INSTRUCTION_LEN),
    }
}

fn host(v: &Loaded<'_>) -> checks::Host {
    checks::Host {
        cr0: v.read(HOST_CR0).0,
        cr3: v.read(HOST_CR3).0,
        cr4: v.read(HOST_CR4).0,
        selectors: [
            v.read(HOST_ES_SELECTOR),
            v.read(HOST_CS_SELECTOR),
            v.read(HOST_SS_SELECTOR),
            v.read(HOST_DS_SELECTOR),
            v.read(HOST_FS_SELECTOR),
            v.read(HOST_GS_SELECTOR),
            v.read(HOST_TR_SELECTOR),
        ],
        fs_base: v.read(HOST_FS_BASE).0,
        gs_base: v.read(HOST_GS_BASE).0,
        tr_base: v.read(HOST_TR_BASE).0,
        gdtr_base: v.read(HOST_GDTR_BASE).0,
        idtr_base: v.read(HOST_IDTR_BASE).0,
        sysenter_esp: v.read(HOST_IA32_SYSENTER_ESP).0,
        sysenter_eip: v.read(HOST_IA32_SYSENTER_EIP).0,
        rip: v.read(HOST_RIP).0,
        pat: v.read(HOST_IA32_PAT),
        efer: v.read(HOST_IA32_EFER),
    }
}

fn segment(v: &Loaded<'_>, f: &SegmentFields) -> checks::Segment {
    checks::Segment {
        selector: v.read(f.selector),
        base: v.read(f.base).0,
        limit: v.read(f.limit),
        ar: v.read(f.access_rights),
    }
}

fn guest(v: &Loaded<'_>) -> checks::Guest {
    checks::Guest {
        // The fields the CPU checks, not the guest's view (read shadows).
        cr0: v.read(GUEST_CR0).0,
        cr3: v.read(GUEST_CR3).0,
        cr4: v.read(GUEST_CR4).0,
        dr7: v.read(GUEST_DR7).0,
        debugctl: v.read(GUEST_IA32_DEBUGCTL),
        pat: v.read(GUEST_IA32_PAT),
        efer: v.read(GUEST_IA32_EFER),
        sysenter_esp: v.read(GUEST_SYSENTER_ESP).0,
        sysenter_eip: v.read(GUEST_SYSENTER_EIP).0,
        seg: [
            segment(v, &GUEST_ES),
            segment(v, &GUEST_CS),
            segment(v, &GUEST_SS),
            segment(v, &GUEST_DS),
            segment(v, &GUEST_FS),
            segment(v, &GUEST_GS),
            segment(v, &GUEST_LDTR),
            segment(v, &GUEST_TR),
        ],
        gdtr_base: v.read(GUEST_GDTR_BASE).0,
        gdtr_limit: v.read(GUEST_GDTR_LIMIT),
        idtr_base: v.read(GUEST_IDTR_BASE).0,
        idtr_limit: v.read(GUEST_IDTR_LIMIT),
        rip: v.read(GUEST_RIP).0,
        rflags: v.read(GUEST_RFLAGS).0,
        activity: v.read(GUEST_ACTIVITY_STATE),
        interruptibility: v.read(GUEST_INTERRUPTIBILITY),
        pending_dbg: v.read(GUEST_PENDING_DBG_EXCEPTIONS).0,
        link_pointer: v.read(VMCS_LINK_POINTER),
        pdpte: [v.read(GUEST_PDPTE0), v.read(GUEST_PDPTE1), v.read(GUEST_PDPTE2), v.read(GUEST_PDPTE3)],
        in_smm: false,
    }
}
