// SPDX-License-Identifier: GPL-2.0

//! MSRs that exist only in software: rvmx keeps their values per vCPU and
//! nothing in the CPU changes when they are written. A VMM such as QEMU
//! saves and restores them with KVM_GET_MSRS/KVM_SET_MSRS (and aborts if
//! one is refused), and a guest OS reads them at boot, so they must behave
//! as KVM's do (arch/x86/kvm/mtrr.c, x86.c set_msr_mce/get_msr_mce):
//!
//! - the MTRRs (memory type range registers, SDM Vol. 3A §12.11): MTRRcap
//!   (read-only: write-combining and fixed ranges supported, 8 variable
//!   ranges), MTRRdefType, the 11 fixed-range and 8 pairs of variable-range
//!   registers. Kept and checked, never applied: guest memory is
//!   ordinary write-back memory under EPT, as in KVM without assigned
//!   devices;
//! - machine-check architecture (SDM Vol. 3B §16.3): MCG_CAP (32 banks
//!   and no MCG_CTL at reset; the VMM may choose fewer banks, MCG_CTL and
//!   software error recovery with KVM_X86_SETUP_MCE, as QEMU does for a
//!   CPU model with MCE), MCG_CTL, MCG_STATUS, and each bank's CTL,
//!   STATUS, ADDR, MISC. No machine check is ever delivered to the guest;
//! - KVM's first paravirtual clock MSRs (0x11 wall clock, 0x12 system
//!   time), which QEMU writes at every reset: a VMM may write and read
//!   them back; rvmx has no paravirtual clock (CPUID 0x40000001 offers
//!   none), so the guest's own RDMSR and WRMSR of them are #GP;
//! - the model-specific odds and ends an operating system reads while it
//!   identifies the CPU, with KVM's values and write rules (x86.c
//!   kvm_get_msr_common/kvm_set_msr_common, vmx.c vmx_set_msr): the
//!   microcode revision (Linux writes 0 and reads it back, without a
//!   fault handler), MISC_ENABLE, FEATURE_CONTROL (lockable, no VMX for
//!   the guest), the SMI count, power and frequency MSRs that read as
//!   constants, and AMD's HWCR. DEBUGCTL's rule is here too
//!   (`debugctl_write`); its value lives in the VMCS;
//! - CPUID faulting, which KVM gives every guest: PLATFORM_INFO bit 31 says
//!   the CPU has it (the VMM may take it away), MISC_FEATURES_ENABLES bit 0
//!   turns it on, and then CPUID at CPL > 0 is #GP (exits/cpuid.rs). Linux
//!   uses it for arch_prctl(ARCH_SET_CPUID, 0).
//!
//! Pure logic, `core` only: built into rvmx.ko (msrs/mod.rs) and into
//! `tests/unit`, which checks it against KVM's rules.

pub(crate) const IA32_P5_MC_ADDR: u32 = 0x0;
pub(crate) const IA32_P5_MC_TYPE: u32 = 0x1;
pub(crate) const IA32_PLATFORM_ID: u32 = 0x17;
pub(crate) const IA32_EBL_CR_POWERON: u32 = 0x2a;
pub(crate) const MSR_EBC_FREQUENCY_ID: u32 = 0x2c;
pub(crate) const MSR_SMI_COUNT: u32 = 0x34;
pub(crate) const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub(crate) const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub(crate) const MSR_PLATFORM_INFO: u32 = 0xce;
pub(crate) const IA32_BBL_CR_CTL3: u32 = 0x11e;
pub(crate) const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
pub(crate) const IA32_PERF_STATUS: u32 = 0x198;
pub(crate) const IA32_PERF_CTL: u32 = 0x199;
pub(crate) const IA32_MISC_ENABLE: u32 = 0x1a0;
pub(crate) const MSR_IA32_POWER_CTL: u32 = 0x1fc;
pub(crate) const MSR_K7_HWCR: u32 = 0xc001_0015;
pub(crate) const MSR_KVM_WALL_CLOCK: u32 = 0x11;
pub(crate) const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
pub(crate) const IA32_MTRRCAP: u32 = 0xfe;
pub(crate) const IA32_MCG_CAP: u32 = 0x179;
pub(crate) const IA32_MCG_STATUS: u32 = 0x17a;
pub(crate) const IA32_MCG_CTL: u32 = 0x17b;
pub(crate) const IA32_MTRR_PHYSBASE0: u32 = 0x200;
pub(crate) const IA32_MTRR_FIX64K_00000: u32 = 0x250;
pub(crate) const IA32_MTRR_FIX16K_80000: u32 = 0x258;
pub(crate) const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
pub(crate) const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
pub(crate) const IA32_MTRR_FIX4K_F8000: u32 = 0x26f;
pub(crate) const IA32_MC0_CTL2: u32 = 0x280;
pub(crate) const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub(crate) const IA32_MC0_CTL: u32 = 0x400;

/// Variable-range MTRR pairs (KVM_NR_VAR_MTRR).
const VAR_MTRRS: u32 = 8;
/// Machine-check banks (KVM_MAX_MCE_BANKS), each with CTL, STATUS, ADDR, MISC.
pub(crate) const MCE_BANKS: u32 = 32;
/// MCG_CAP: the bank count (7:0), MCG_CTL present (8), software error
/// recovery (24); bits 23:16 are the extended state registers' count,
/// which KVM lets the VMM set.
const MCG_BANKS_MASK: u64 = 0xff;
const MCG_CTL_P: u64 = 1 << 8;
const MCG_SER_P: u64 = 1 << 24;
/// What KVM_X86_GET_MCE_CAP_SUPPORTED reports: MCG_CTL and software error
/// recovery (KVM adds LMCE and CMCI, which need a local APIC).
pub(crate) const SUPPORTED_MCE_CAP: u64 = MCG_CTL_P | MCG_SER_P;
/// MTRRcap: WC (bit 10), fixed ranges (bit 8), 8 variable ranges.
const MTRRCAP: u64 = 0x500 | VAR_MTRRS as u64;
/// The microcode revision a vCPU reports until the VMM sets one (KVM's
/// kvm_vcpu_reset: revision 1 in the high half, where Intel CPUs keep it).
const UCODE_REV_RESET: u64 = 0x1_0000_0000;
/// MISC_ENABLE: performance monitoring available (bit 7, read-only for the
/// guest, writes ignored), BTS and PEBS unavailable (bits 11 and 12,
/// read-only: a guest write that changes them is #GP). KVM's reset value
/// has bits 11 and 12 set.
const MISC_ENABLE_EMON: u64 = 1 << 7;
const MISC_ENABLE_RO: u64 = (1 << 11) | (1 << 12);
const MISC_ENABLE_RESET: u64 = MISC_ENABLE_RO;
/// FEATURE_CONTROL: bit 0 locks it. The guest has no VMX, SGX or LMCE, so
/// the lock is the only bit it may set; the VMM may restore the bits KVM
/// supports (lock, VMX inside and outside SMX, SGX launch control and
/// enable, LMCE).
const FEAT_CTL_LOCKED: u64 = 1 << 0;
const FEAT_CTL_VMM: u64 = FEAT_CTL_LOCKED | (1 << 1) | (1 << 2) | (1 << 17) | (1 << 18) | (1 << 20);
/// PERF_STATUS as KVM reports it: a TSC increment per tick of 1000 and a
/// bus ratio of 4.
const PERF_STATUS: u64 = 1000 | (4 << 40);
/// BBL_CR_CTL3 as KVM reports it: "L2 cache control register 3: 64GB
/// range, 256KB size, enabled, latency 0x1, configured".
const BBL_CR_CTL3: u64 = 0xbe70_2111;
/// EBC_FREQUENCY_ID: core-to-bus ratio 1 (bits 31:24), so that a guest
/// never divides by zero.
const EBC_FREQUENCY_ID: u64 = 1 << 24;
/// HWCR bits a write may change: McStatusWrEn (18) and TscFreqSel (24);
/// the flush-filter, IGNNE and TLB-cache-disable bits are ignored.
const HWCR_ALLOWED: u64 = (1 << 18) | (1 << 24);
const HWCR_IGNORED: u64 = 0x40 | 0x100 | 0x8;
/// DEBUGCTL bits a guest may set but rvmx drops, as KVM does when it
/// cannot virtualize them: BTF (single-step on branches) and LBR (last
/// branch records). Any other bit is #GP.
const DEBUGCTL_DROPPED: u64 = (1 << 1) | (1 << 0);
/// PLATFORM_INFO bit 31: CPUID faulting is available.
const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// MISC_FEATURES_ENABLES bit 0: CPUID faulting is on (the only bit).
const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;

/// Why an access was refused: the guest gets #GP(0), KVM_GET/SET_MSRS stop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused;

/// Who is asking: the guest (its RDMSR/WRMSR) or the VMM (KVM_GET_MSRS,
/// KVM_SET_MSRS), which may read and restore more than the guest may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum By {
    Guest,
    Vmm,
}

/// The software-only MSRs of one vCPU (their reset values: `reset`, as
/// KVM's kvm_arch_vcpu_create).
pub(crate) struct EmulatedMsrs {
    mtrr_def_type: u64,
    /// 0x250, 0x258, 0x259, 0x268..=0x26f.
    mtrr_fixed: [u64; 11],
    /// PHYSBASE0, PHYSMASK0, PHYSBASE1, ... (0x200..=0x20f).
    mtrr_var: [u64; 2 * VAR_MTRRS as usize],
    /// MCG_CAP: the bank count and MCG_CTL_P (KVM_X86_SETUP_MCE).
    mcg_cap: u64,
    mcg_status: u64,
    mcg_ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank (0x400..=0x47f).
    mce_banks: [u64; 4 * MCE_BANKS as usize],
    kvm_wall_clock: u64,
    kvm_system_time: u64,
    ucode_rev: u64,
    misc_enable: u64,
    feature_control: u64,
    smi_count: u64,
    power_ctl: u64,
    hwcr: u64,
    platform_info: u64,
    misc_features_enables: u64,
    /// Reserved guest-physical address bits: those above MAXPHYADDR.
    reserved_pa: u64,
}

/// A memory type an MTRR may name: UC, WC, WT, WP, WB.
fn valid_mtrr_type(t: u64) -> bool {
    t < 8 && (1 << t) & 0x73 != 0
}

/// The index of a fixed-range MTRR in `mtrr_fixed`.
fn fixed_slot(index: u32) -> Option<usize> {
    match index {
        IA32_MTRR_FIX64K_00000 => Some(0),
        IA32_MTRR_FIX16K_80000 => Some(1),
        IA32_MTRR_FIX16K_A0000 => Some(2),
        // CAST: at most 7.
        IA32_MTRR_FIX4K_C0000..=IA32_MTRR_FIX4K_F8000 => Some(3 + (index - IA32_MTRR_FIX4K_C0000) as usize),
        _ => None,
    }
}

impl EmulatedMsrs {
    /// The reset values, for a guest whose physical-address width is
    /// `maxphyaddr` (bits above it are reserved in the variable-range
    /// MTRRs). For tests/unit: rvmx.ko builds the value zeroed, in place
    /// on the heap, and calls `reset`.
    #[allow(dead_code)]
    pub(crate) fn new(maxphyaddr: u32) -> Self {
        let mut m = EmulatedMsrs {
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [0; 2 * VAR_MTRRS as usize],
            mcg_cap: 0,
            mcg_status: 0,
            mcg_ctl: 0,
            mce_banks: [0; 4 * MCE_BANKS as usize],
            kvm_wall_clock: 0,
            kvm_system_time: 0,
            ucode_rev: 0,
            misc_enable: 0,
            feature_control: 0,
            smi_count: 0,
            power_ctl: 0,
            hwcr: 0,
            platform_info: 0,
            misc_features_enables: 0,
            reserved_pa: 0,
        };
        m.reset(maxphyaddr);
        m
    }

    /// Back to the reset values (as KVM's kvm_arch_vcpu_create and
    /// kvm_vcpu_reset).
    pub(crate) fn reset(&mut self, maxphyaddr: u32) {
        self.ucode_rev = UCODE_REV_RESET;
        self.misc_enable = MISC_ENABLE_RESET;
        self.feature_control = 0;
        self.smi_count = 0;
        self.power_ctl = 0;
        self.hwcr = 0;
        self.platform_info = PLATFORM_INFO_CPUID_FAULT;
        self.misc_features_enables = 0;
        self.mtrr_def_type = 0;
        self.mtrr_fixed.fill(0);
        self.mtrr_var.fill(0);
        self.mcg_cap = u64::from(MCE_BANKS);
        self.mcg_status = 0;
        self.mcg_ctl = 0;
        self.mce_banks.fill(0);
        self.kvm_wall_clock = 0;
        self.kvm_system_time = 0;
        self.reserved_pa = !0u64 << maxphyaddr.clamp(32, 52);
    }

    /// Whether CPUID at CPL > 0 is #GP (MISC_FEATURES_ENABLES bit 0).
    pub(crate) fn cpuid_faulting(&self) -> bool {
        self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0
    }

    /// The machine-check banks the guest has (1 to 32).
    fn banks(&self) -> u32 {
        // CAST: `setup_mce` keeps the count within 1..=MCE_BANKS.
        (self.mcg_cap & MCG_BANKS_MASK) as u32
    }

    /// KVM_X86_SETUP_MCE: the guest's MCG_CAP, with KVM's checks (1 to 32
    /// banks, no capability KVM_X86_GET_MCE_CAP_SUPPORTED did not offer);
    /// MCG_CTL (if present) and each bank's CTL become all ones, as after
    /// a reset of a CPU with them.
    pub(crate) fn setup_mce(&mut self, mcg_cap: u64) -> Result<(), Refused> {
        let banks = mcg_cap & MCG_BANKS_MASK;
        if banks == 0 || banks > u64::from(MCE_BANKS) || mcg_cap & !(SUPPORTED_MCE_CAP | MCG_BANKS_MASK | 0xff_0000) != 0 {
            return Err(Refused);
        }
        self.mcg_cap = mcg_cap;
        if mcg_cap & MCG_CTL_P != 0 {
            self.mcg_ctl = !0;
        }
        // CAST: at most 32 banks, 4 registers each.
        for b in 0..banks as usize {
            self.mce_banks[4 * b] = !0;
        }
        Ok(())
    }

    /// Whether `index` is one of these MSRs.
    pub(crate) fn has(index: u32) -> bool {
        matches!(index,
            IA32_P5_MC_ADDR | IA32_P5_MC_TYPE | MSR_KVM_WALL_CLOCK | MSR_KVM_SYSTEM_TIME | IA32_MTRRCAP
            | IA32_MCG_CAP | IA32_MCG_STATUS | IA32_MCG_CTL | IA32_MTRR_DEF_TYPE
            | IA32_PLATFORM_ID | IA32_EBL_CR_POWERON | MSR_EBC_FREQUENCY_ID | MSR_SMI_COUNT
            | IA32_FEATURE_CONTROL | IA32_BIOS_SIGN_ID | MSR_PLATFORM_INFO | IA32_BBL_CR_CTL3
            | MSR_MISC_FEATURES_ENABLES | IA32_PERF_STATUS | IA32_PERF_CTL | IA32_MISC_ENABLE
            | MSR_IA32_POWER_CTL | MSR_K7_HWCR)
            || fixed_slot(index).is_some()
            || (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VAR_MTRRS).contains(&index)
            || (IA32_MC0_CTL2..IA32_MC0_CTL2 + MCE_BANKS).contains(&index)
            || (IA32_MC0_CTL..IA32_MC0_CTL + 4 * MCE_BANKS).contains(&index)
    }

    /// Reads MSR `index` (one of `has`).
    pub(crate) fn get(&self, index: u32, by: By) -> Result<u64, Refused> {
        Ok(match index {
            IA32_P5_MC_ADDR | IA32_P5_MC_TYPE => 0,
            IA32_PLATFORM_ID | IA32_EBL_CR_POWERON | IA32_PERF_CTL => 0,
            MSR_PLATFORM_INFO => self.platform_info,
            MSR_MISC_FEATURES_ENABLES => self.misc_features_enables,
            MSR_EBC_FREQUENCY_ID => EBC_FREQUENCY_ID,
            IA32_PERF_STATUS => PERF_STATUS,
            IA32_BBL_CR_CTL3 => BBL_CR_CTL3,
            IA32_BIOS_SIGN_ID => self.ucode_rev,
            IA32_MISC_ENABLE => self.misc_enable,
            IA32_FEATURE_CONTROL => self.feature_control,
            MSR_SMI_COUNT => self.smi_count,
            MSR_IA32_POWER_CTL => self.power_ctl,
            MSR_K7_HWCR => self.hwcr,
            MSR_KVM_WALL_CLOCK if by == By::Vmm => self.kvm_wall_clock,
            MSR_KVM_SYSTEM_TIME if by == By::Vmm => self.kvm_system_time,
            IA32_MTRRCAP => MTRRCAP,
            IA32_MTRR_DEF_TYPE => self.mtrr_def_type,
            IA32_MCG_CAP => self.mcg_cap,
            IA32_MCG_STATUS => self.mcg_status,
            // Without MCG_CTL_P only the VMM may read it (to save it).
            IA32_MCG_CTL if by == By::Vmm || self.mcg_cap & MCG_CTL_P != 0 => self.mcg_ctl,
            // No CMCI: CTL2 reads as 0 for the VMM, #GP for the guest.
            i if (IA32_MC0_CTL2..IA32_MC0_CTL2 + self.banks()).contains(&i) && by == By::Vmm => 0,
            // CAST: below 4 * MCE_BANKS.
            i if (IA32_MC0_CTL..IA32_MC0_CTL + 4 * self.banks()).contains(&i) => self.mce_banks[(i - IA32_MC0_CTL) as usize],
            // CAST: below 2 * VAR_MTRRS.
            i if (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VAR_MTRRS).contains(&i) => {
                self.mtrr_var[(i - IA32_MTRR_PHYSBASE0) as usize]
            }
            i => match fixed_slot(i) {
                Some(s) => self.mtrr_fixed[s],
                None => return Err(Refused),
            },
        })
    }

    /// Writes MSR `index` (one of `has`) with KVM's checks.
    pub(crate) fn set(&mut self, index: u32, value: u64, by: By) -> Result<(), Refused> {
        let ok = |c: bool| if c { Ok(()) } else { Err(Refused) };
        match index {
            // Linux loads microcode by writing 0 and reading the revision
            // back: the guest's write is accepted and changes nothing.
            IA32_BIOS_SIGN_ID if by == By::Vmm => self.ucode_rev = value,
            IA32_BIOS_SIGN_ID => {}
            IA32_MISC_ENABLE => {
                let mut value = value;
                if by == By::Guest {
                    ok((self.misc_enable ^ value) & MISC_ENABLE_RO == 0)?;
                    value = (value & !MISC_ENABLE_EMON) | (self.misc_enable & MISC_ENABLE_EMON);
                }
                self.misc_enable = value;
            }
            IA32_FEATURE_CONTROL => {
                let allowed = if by == By::Vmm { FEAT_CTL_VMM } else { FEAT_CTL_LOCKED };
                ok(value & !allowed == 0 && (by == By::Vmm || self.feature_control & FEAT_CTL_LOCKED == 0))?;
                self.feature_control = value;
            }
            MSR_SMI_COUNT if by == By::Vmm => self.smi_count = value,
            MSR_IA32_POWER_CTL => self.power_ctl = value,
            // CPUID faulting may be turned on where PLATFORM_INFO offers
            // it; PLATFORM_INFO is the VMM's, which may not take faulting
            // away while it is on (KVM's rules).
            MSR_MISC_FEATURES_ENABLES => {
                ok(value & !MISC_FEATURES_CPUID_FAULT == 0
                    && (value == 0 || self.platform_info & PLATFORM_INFO_CPUID_FAULT != 0))?;
                self.misc_features_enables = value;
            }
            MSR_PLATFORM_INFO => {
                ok(by == By::Vmm && (value & PLATFORM_INFO_CPUID_FAULT != 0 || !self.cpuid_faulting()))?;
                self.platform_info = value;
            }
            MSR_K7_HWCR => {
                let value = value & !HWCR_IGNORED;
                ok(value & !HWCR_ALLOWED == 0)?;
                self.hwcr = value;
            }
            MSR_KVM_WALL_CLOCK if by == By::Vmm => self.kvm_wall_clock = value,
            MSR_KVM_SYSTEM_TIME if by == By::Vmm => self.kvm_system_time = value,
            IA32_MTRR_DEF_TYPE => {
                // Type in 7:0, FE (bit 10) and E (bit 11); the rest reserved.
                ok(value & !0xcff == 0 && valid_mtrr_type(value & 0xff))?;
                self.mtrr_def_type = value;
            }
            IA32_MCG_STATUS => self.mcg_status = value,
            IA32_MCG_CTL => {
                // Without MCG_CTL_P only the VMM may write it, and only 0;
                // with it, 0 or all ones.
                ok((self.mcg_cap & MCG_CTL_P != 0 || by == By::Vmm && value == 0) && (value == 0 || value == !0))?;
                self.mcg_ctl = value;
            }
            i if (IA32_MC0_CTL2..IA32_MC0_CTL2 + self.banks()).contains(&i) => ok(by == By::Vmm && value == 0)?,
            i if (IA32_MC0_CTL..IA32_MC0_CTL + 4 * self.banks()).contains(&i) => {
                let off = i - IA32_MC0_CTL;
                match off % 4 {
                    // MCi_CTL: 0 or all ones (bits 10 and 0 may be clear,
                    // for old Linux and UnixWare; see KVM's set_msr_mce).
                    0 => ok(value == 0 || value | (1 << 10) | 1 == !0)?,
                    // MCi_STATUS: the guest may only clear it.
                    1 => ok(by == By::Vmm || value == 0)?,
                    _ => {}
                }
                // CAST: below 4 * MCE_BANKS.
                self.mce_banks[off as usize] = value;
            }
            i if (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VAR_MTRRS).contains(&i) => {
                let base = (i - IA32_MTRR_PHYSBASE0) & 1 == 0;
                // PHYSBASE: type in 7:0, bits 11:8 reserved; PHYSMASK: bits
                // 10:0 reserved (bit 11 is "valid"); both: above MAXPHYADDR.
                let reserved = self.reserved_pa | if base { 0xf00 } else { 0x7ff };
                ok(value & reserved == 0 && (!base || valid_mtrr_type(value & 0xff)))?;
                // CAST: below 2 * VAR_MTRRS.
                self.mtrr_var[(i - IA32_MTRR_PHYSBASE0) as usize] = value;
            }
            i => match fixed_slot(i) {
                Some(s) => {
                    // Eight memory types, one per byte.
                    ok(value.to_le_bytes().iter().all(|&t| valid_mtrr_type(u64::from(t))))?;
                    self.mtrr_fixed[s] = value;
                }
                // MTRRcap, MCG_CAP, P5_MC_* and the constants: read-only;
                // the paravirtual clock and the SMI count: not the guest's.
                None => return Err(Refused),
            },
        }
        Ok(())
    }
}

/// A write of IA32_DEBUGCTL (by the guest or the VMM): the value the guest
/// then holds, or `Refused` (#GP). rvmx virtualizes none of its features
/// (no last-branch records, no bus-lock detection), so like KVM without
/// them it drops BTF and LBR silently and refuses every other bit.
pub(crate) fn debugctl_write(value: u64) -> Result<u64, Refused> {
    if value & !DEBUGCTL_DROPPED != 0 {
        return Err(Refused);
    }
    Ok(0)
}
