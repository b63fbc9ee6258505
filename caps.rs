// SPDX-License-Identifier: GPL-2.0

//! What this CPU's VMX offers: the capability MSRs, probed once at module
//! load into a typed `VmxCaps` (SDM Vol. 3D, Appendix A "VMX Capability
//! Reporting Facility"), and the checks that decide whether rvmx can run.

use crate::kglue::{rvmx_glue_exit_mitigations, rvmx_glue_l1d_flush_mode};
use crate::hw::{
    self,
    msr::{self, rdmsr, Msr},
};
use crate::vmcs::controls::{pin, proc, proc2};
use kernel::prelude::*;

/// Allowed settings of one 32-bit VMX control field, from its capability
/// MSR: bits 31:0 are the *allowed 0-settings* (a 1 there means the control
/// must be 1) and bits 63:32 the *allowed 1-settings* (a 0 there means the
/// control must be 0). SDM Vol. 3D §A.3. `ControlCaps::adjust` uses
/// them to compute every control field.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ControlCaps {
    /// Controls the CPU forces to 1.
    pub(crate) must_be_one: u32,
    /// Controls the CPU allows to be 1.
    pub(crate) may_be_one: u32,
}

impl ControlCaps {
    /// Computes the value of a control field: `required` bits must be
    /// allowed to be 1, the CPU's must-be-one bits are added, and `optional`
    /// bits are kept where the CPU allows them. A CPU that forbids a required
    /// control fails here, at vCPU creation, not at VM entry.
    pub(crate) fn adjust(&self, what: &str, required: u32, optional: u32) -> Result<u32> {
        let missing = required & !self.may_be_one;
        if missing != 0 {
            pr_err!("this CPU does not allow {} controls {:#x}\n", what, missing);
            return Err(eopnotsupp());
        }
        Ok(self.must_be_one | required | (optional & self.may_be_one))
    }

    fn from_msr(v: u64) -> Self {
        // CAST: the two halves of the MSR are the two 32-bit masks.
        Self { must_be_one: v as u32, may_be_one: (v >> 32) as u32 }
    }

    /// Whether the control at `bit` may be set to 1.
    pub(crate) fn allows(&self, bit: u32) -> bool {
        self.may_be_one & bit != 0
    }
}

// Bits rvmx looks at, named as in the SDM (Vol. 3C §25.6 and Appendix A).
const BASIC_TRUE_CTLS: u64 = 1 << 55;
const EPT_WALK_4: u64 = 1 << 6;
const EPT_WB: u64 = 1 << 14;
const EPT_2M_PAGES: u64 = 1 << 16;
const EPT_INVEPT: u64 = 1 << 20;
const EPT_AD: u64 = 1 << 21;
/// IA32_VMX_EPT_VPID_CAP bits 32 and 41: INVVPID, single-context type.
const VPID_INVVPID: u64 = 1 << 32;
const VPID_INVVPID_SINGLE: u64 = 1 << 41;
/// IA32_VMX_EPT_VPID_CAP bit 25: INVEPT single-context is supported.
pub(crate) const EPT_INVEPT_SINGLE: u64 = 1 << 25;
/// IA32_VMX_EPT_VPID_CAP bit 26: INVEPT all-context is supported.
pub(crate) const EPT_INVEPT_ALL: u64 = 1 << 26;

/// The VMX capabilities of the CPU, read once from the IA32_VMX_* MSRs.
///
/// # Invariants
///
/// Built only by `probe()`, after CPUID reported VMX and IA32_FEATURE_CONTROL
/// allowed VMXON; `proc2`/`ept_vpid` are zero when the CPU lacks them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VmxCaps {
    /// IA32_VMX_BASIC bits 30:0: the revision identifier that every VMXON
    /// region and VMCS must start with.
    pub(crate) revision_id: u32,
    /// IA32_VMX_BASIC bits 44:32: bytes to allocate for a VMXON region/VMCS.
    pub(crate) region_size: u32,
    /// Whether the TRUE_ control MSRs exist (and were used below).
    pub(crate) true_ctls: bool,
    /// IA32_VMX_BASIC[54]: VM exits for INS/OUTS report the instruction
    /// information (address size, segment).
    pub(crate) ins_outs_info: bool,
    pub(crate) pin: ControlCaps,
    pub(crate) proc: ControlCaps,
    pub(crate) proc2: ControlCaps,
    pub(crate) exit: ControlCaps,
    pub(crate) entry: ControlCaps,
    /// IA32_VMX_EPT_VPID_CAP.
    pub(crate) ept_vpid: u64,
    /// Bits of CR0/CR4 fixed to 1 (FIXED0) and allowed to be 1 (FIXED1) in
    /// VMX operation.
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
    /// CPUID.80000008H:EAX[7:0], the physical-address width: guest page
    /// table entries with address bits at or above it are reserved.
    pub(crate) maxphyaddr: u8,
    /// CPUID.80000008H:EAX[15:8], the linear-address width (48 or 57):
    /// what "canonical" means on this CPU.
    pub(crate) linear_bits: u8,
    /// IA32_VMX_MISC, raw (the entry-failure explainer reads the activity
    /// states and zero-length injection from it).
    pub(crate) misc: u64,
    /// IA32_VMX_MISC[4:0]: the preemption timer ticks once per 2^n TSC
    /// ticks (0 under Bochs: once per emulated instruction).
    pub(crate) preemption_timer_rate: u8,
    /// L1TF: how L1D is flushed before every VM entry, as the host
    /// kernel's L1TF mitigation asks (kglue/run.c).
    pub(crate) l1d_flush: L1dFlush,
}

/// How rvmx flushes L1D before a VM entry (the L1TF mitigation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L1dFlush {
    /// The CPU is not affected, or the host kernel turned the mitigation off.
    NotNeeded,
    /// A write to IA32_FLUSH_CMD.
    Msr,
    /// Reading a buffer twice the size of L1D (no IA32_FLUSH_CMD, or the
    /// `l1d_flush=software` module parameter).
    Software,
}

/// Why the CPU cannot run rvmx; `probe()` logs the reason and maps it to the
/// errno the module load fails with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// CPUID.1:ECX.VMX is clear.
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked with VMXON outside SMX disabled.
    DisabledByFirmware,
    /// IA32_FEATURE_CONTROL is not locked (VMXON would #GP).
    FeatureControlUnlocked,
    /// A feature rvmx requires is missing.
    Missing(&'static str),
}

impl Unsupported {
    pub(crate) fn errno(self) -> Error {
        match self {
            Unsupported::NoVmx | Unsupported::Missing(_) => ENODEV,
            Unsupported::DisabledByFirmware | Unsupported::FeatureControlUnlocked => EPERM,
        }
    }
}

/// The IA32_FEATURE_CONTROL rule (SDM Vol. 3C §24.7): VMXON outside SMX
/// needs bit 0 (lock) and bit 2 (enable outside SMX) both set.
pub(crate) fn check_feature_control(v: u64) -> Result<(), Unsupported> {
    if v & msr::FEATURE_CONTROL_LOCKED == 0 {
        Err(Unsupported::FeatureControlUnlocked)
    } else if v & msr::FEATURE_CONTROL_VMXON_OUTSIDE_SMX == 0 {
        Err(Unsupported::DisabledByFirmware)
    } else {
        Ok(())
    }
}

impl VmxCaps {
    /// Reads the capability MSRs on the current CPU and checks that rvmx's
    /// requirements (EPT with 4-level walks and write-back memory, and
    /// unrestricted guest) are met.
    pub(crate) fn probe() -> Result<Self, Unsupported> {
        if !hw::cpu_has_vmx() {
            return Err(Unsupported::NoVmx);
        }
        // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX.
        check_feature_control(unsafe { rdmsr(msr::IA32_FEATURE_CONTROL) })?;

        let read = |m: Msr| {
            // SAFETY: (every read below) the basic, control, CR-fixed
            // and misc MSRs exist on every CPU with VMX (SDM Vol. 3D §A.1);
            // the TRUE_ ones exist when IA32_VMX_BASIC[55] is set,
            // PROCBASED_CTLS2 when the primary controls allow "activate
            // secondary controls", and EPT_VPID_CAP when the secondary
            // controls allow EPT or VPID (§A.10).
            unsafe { rdmsr(m) }
        };
        let basic = read(msr::IA32_VMX_BASIC);
        let true_ctls = basic & BASIC_TRUE_CTLS != 0;
        let ctl = |plain: Msr, tru: Msr| ControlCaps::from_msr(read(if true_ctls { tru } else { plain }));
        let proc = ctl(msr::IA32_VMX_PROCBASED_CTLS, msr::IA32_VMX_TRUE_PROCBASED_CTLS);
        let proc2 = if proc.allows(proc::ACTIVATE_SECONDARY) {
            ControlCaps::from_msr(read(msr::IA32_VMX_PROCBASED_CTLS2))
        } else {
            ControlCaps::default()
        };
        let ept_vpid = if proc2.allows(proc2::ENABLE_EPT) || proc2.allows(proc2::ENABLE_VPID) {
            read(msr::IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        // INVARIANT: VMX present and enabled was checked above.
        let caps = VmxCaps {
            // CAST: bits 30:0 and 44:32 of IA32_VMX_BASIC.
            revision_id: (basic & 0x7fff_ffff) as u32,
            region_size: ((basic >> 32) & 0x1fff) as u32,
            true_ctls,
            ins_outs_info: basic & (1 << 54) != 0,
            pin: ctl(msr::IA32_VMX_PINBASED_CTLS, msr::IA32_VMX_TRUE_PINBASED_CTLS),
            proc,
            proc2,
            exit: ctl(msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS),
            entry: ctl(msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS),
            ept_vpid,
            cr0_fixed0: read(msr::IA32_VMX_CR0_FIXED0),
            cr0_fixed1: read(msr::IA32_VMX_CR0_FIXED1),
            cr4_fixed0: read(msr::IA32_VMX_CR4_FIXED0),
            cr4_fixed1: read(msr::IA32_VMX_CR4_FIXED1),
            // CAST: bits 4:0.
            preemption_timer_rate: (read(msr::IA32_VMX_MISC) & 0x1f) as u8,
            // CAST: bits 7:0.
            maxphyaddr: hw::cpuid(0x8000_0008, 0)[0] as u8,
            // CAST: bits 15:8.
            linear_bits: (hw::cpuid(0x8000_0008, 0)[0] >> 8) as u8,
            misc: read(msr::IA32_VMX_MISC),
            // SAFETY: reads the kernel's own mitigation choices.
            l1d_flush: match unsafe { rvmx_glue_l1d_flush_mode() } {
                1 => L1dFlush::Msr,
                2 => L1dFlush::Software,
                _ => L1dFlush::NotNeeded,
            },
        };
        caps.check_required()?;
        // A kernel that delivers events with FRED instead of the IDT: rvmx
        // hands NMIs that exit the guest to the host through the IDT.
        if hw::cr4_shadow() & hw::cr::CR4_FRED != 0 {
            return Err(Unsupported::Missing("IDT event delivery (this kernel uses FRED)"));
        }
        Ok(caps)
    }

    fn check_required(&self) -> Result<(), Unsupported> {
        let need = [
            (self.proc.allows(proc::ACTIVATE_SECONDARY), "secondary processor-based controls"),
            (self.proc2.allows(proc2::ENABLE_EPT), "EPT"),
            (self.proc2.allows(proc2::UNRESTRICTED_GUEST), "unrestricted guest"),
            (self.ept_vpid & EPT_WALK_4 != 0, "4-level EPT page walks"),
            (self.ept_vpid & EPT_WB != 0, "write-back EPT paging structures"),
            (self.ept_vpid & EPT_INVEPT != 0, "INVEPT"),
            (self.ept_vpid & EPT_INVEPT_SINGLE != 0, "single-context INVEPT"),
            // A VMXON region/VMCS larger than a page would need more than the
            // single page rvmx allocates for it.
            (self.region_size as usize <= kernel::page::PAGE_SIZE, "VMCS region of at most 4 KiB"),
        ];
        match need.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(Unsupported::Missing(what)),
            None => Ok(()),
        }
    }

    /// Whether vCPUs get VPIDs: the control exists and INVVPID can flush one
    /// VPID's translations (what a vCPU needs when it moves to another
    /// CPU, vcpu/run.rs).
    pub(crate) fn vpid_usable(&self) -> bool {
        self.proc2.allows(proc2::ENABLE_VPID) && self.ept_vpid & VPID_INVVPID != 0 && self.ept_vpid & VPID_INVVPID_SINGLE != 0
    }

    /// Whether NMIs can be injected into guests: the "virtual NMIs" control
    /// (the CPU tracks the guest's NMI blocking) and NMI-window exits.
    pub(crate) fn virtual_nmis(&self) -> bool {
        self.pin.allows(pin::VIRTUAL_NMIS)
            && self.proc.allows(proc::NMI_WINDOW_EXITING)
    }

    /// Logs one readable line of what the CPU offers.
    pub(crate) fn log(&self) {
        let yn = |b: bool| if b { "yes" } else { "no" };
        pr_info!(
            "VMX revision {:#x}, VMCS {} bytes, true controls {}; EPT yes (2M pages {}, A/D bits {}), unrestricted guest yes, VPID {}, virtual NMIs {}, preemption timer {}, PML {}\n",
            self.revision_id,
            self.region_size,
            yn(self.true_ctls),
            yn(self.ept_vpid & EPT_2M_PAGES != 0),
            yn(self.ept_vpid & EPT_AD != 0),
            yn(self.vpid_usable()),
            yn(self.virtual_nmis()),
            yn(self.pin.allows(pin::PREEMPTION_TIMER)),
            yn(self.proc2.allows(proc2::ENABLE_PML)),
        );
        let l1d = match self.l1d_flush {
            L1dFlush::Msr => "yes (IA32_FLUSH_CMD)",
            L1dFlush::Software => "yes (by software: a 64 KiB read, as KVM without IA32_FLUSH_CMD)",
            L1dFlush::NotNeeded => "not needed",
        };
        // SAFETY: reads the kernel's own mitigation choices.
        let exit = unsafe { rvmx_glue_exit_mitigations() };
        let bhb = if exit & 1 != 0 { "yes (clear_bhb_loop, as the kernel does on VM exit)" } else { "no (the kernel does not clear it on VM exit)" };
        let ibrs = if exit & 2 != 0 { "yes (legacy IBRS)" } else { "no (the kernel does not use legacy IBRS)" };
        pr_info!("mitigations on VM entry: CPU buffers cleared with VERW where the kernel clears them, IBPB between vCPUs where the kernel uses IBPB, L1D flush {}; on VM exit: branch history cleared {}, host SPEC_CTRL written back {}\n", l1d, bhb, ibrs);
    }
}

/// EOPNOTSUPP ("operation not supported"), which 6.12's `kernel::error`
/// does not name: what rvmx answers when this CPU lacks something a request
/// needs.
pub(crate) fn eopnotsupp() -> Error {
    // CAST: errno values are small positive integers.
    Error::from_errno(-(kernel::bindings::EOPNOTSUPP as i32))
}
