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
//! - machine-check architecture (SDM Vol. 3B §16.3): MCG_CAP (32 banks,
//!   no MCG_CTL, no CMCI), MCG_STATUS, and each bank's CTL, STATUS, ADDR,
//!   MISC. No machine check is ever delivered to the guest;
//! - KVM's first paravirtual clock MSRs (0x11 wall clock, 0x12 system
//!   time), which QEMU writes at every reset: a VMM may write and read
//!   them back; rvmx has no paravirtual clock (CPUID 0x40000001 offers
//!   none), so the guest's own RDMSR and WRMSR of them are #GP.
//!
//! Pure logic, `core` only: built into rvmx.ko (msrs/mod.rs) and into
//! `tests/unit`, which checks it against KVM's rules.

pub(crate) const IA32_P5_MC_ADDR: u32 = 0x0;
pub(crate) const IA32_P5_MC_TYPE: u32 = 0x1;
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
const MCE_BANKS: u32 = 32;
/// MTRRcap: WC (bit 10), fixed ranges (bit 8), 8 variable ranges.
const MTRRCAP: u64 = 0x500 | VAR_MTRRS as u64;

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

/// The software-only MSRs of one vCPU, at their reset values (all zero
/// but MCG_CAP, as KVM's kvm_arch_vcpu_create).
pub(crate) struct EmulatedMsrs {
    mtrr_def_type: u64,
    /// 0x250, 0x258, 0x259, 0x268..=0x26f.
    mtrr_fixed: [u64; 11],
    /// PHYSBASE0, PHYSMASK0, PHYSBASE1, ... (0x200..=0x20f).
    mtrr_var: [u64; 2 * VAR_MTRRS as usize],
    mcg_status: u64,
    mcg_ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank (0x400..=0x47f).
    mce_banks: [u64; 4 * MCE_BANKS as usize],
    kvm_wall_clock: u64,
    kvm_system_time: u64,
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
            mcg_status: 0,
            mcg_ctl: 0,
            mce_banks: [0; 4 * MCE_BANKS as usize],
            kvm_wall_clock: 0,
            kvm_system_time: 0,
            reserved_pa: 0,
        };
        m.reset(maxphyaddr);
        m
    }

    /// Back to the reset values (all zero, as KVM's kvm_arch_vcpu_create).
    pub(crate) fn reset(&mut self, maxphyaddr: u32) {
        self.mtrr_def_type = 0;
        self.mtrr_fixed.fill(0);
        self.mtrr_var.fill(0);
        self.mcg_status = 0;
        self.mcg_ctl = 0;
        self.mce_banks.fill(0);
        self.kvm_wall_clock = 0;
        self.kvm_system_time = 0;
        self.reserved_pa = !0u64 << maxphyaddr.clamp(32, 52);
    }

    /// Whether `index` is one of these MSRs.
    pub(crate) fn has(index: u32) -> bool {
        matches!(index,
            IA32_P5_MC_ADDR | IA32_P5_MC_TYPE | MSR_KVM_WALL_CLOCK | MSR_KVM_SYSTEM_TIME | IA32_MTRRCAP
            | IA32_MCG_CAP | IA32_MCG_STATUS | IA32_MCG_CTL | IA32_MTRR_DEF_TYPE)
            || fixed_slot(index).is_some()
            || (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VAR_MTRRS).contains(&index)
            || (IA32_MC0_CTL2..IA32_MC0_CTL2 + MCE_BANKS).contains(&index)
            || (IA32_MC0_CTL..IA32_MC0_CTL + 4 * MCE_BANKS).contains(&index)
    }

    /// Reads MSR `index` (one of `has`).
    pub(crate) fn get(&self, index: u32, by: By) -> Result<u64, Refused> {
        Ok(match index {
            IA32_P5_MC_ADDR | IA32_P5_MC_TYPE => 0,
            MSR_KVM_WALL_CLOCK if by == By::Vmm => self.kvm_wall_clock,
            MSR_KVM_SYSTEM_TIME if by == By::Vmm => self.kvm_system_time,
            IA32_MTRRCAP => MTRRCAP,
            IA32_MTRR_DEF_TYPE => self.mtrr_def_type,
            IA32_MCG_CAP => u64::from(MCE_BANKS),
            IA32_MCG_STATUS => self.mcg_status,
            // No MCG_CTL_P: only the VMM may read it (to save it).
            IA32_MCG_CTL if by == By::Vmm => self.mcg_ctl,
            // No CMCI: CTL2 reads as 0 for the VMM, #GP for the guest.
            i if (IA32_MC0_CTL2..IA32_MC0_CTL2 + MCE_BANKS).contains(&i) && by == By::Vmm => 0,
            // CAST: below 4 * MCE_BANKS.
            i if (IA32_MC0_CTL..IA32_MC0_CTL + 4 * MCE_BANKS).contains(&i) => self.mce_banks[(i - IA32_MC0_CTL) as usize],
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
            MSR_KVM_WALL_CLOCK if by == By::Vmm => self.kvm_wall_clock = value,
            MSR_KVM_SYSTEM_TIME if by == By::Vmm => self.kvm_system_time = value,
            IA32_MTRR_DEF_TYPE => {
                // Type in 7:0, FE (bit 10) and E (bit 11); the rest reserved.
                ok(value & !0xcff == 0 && valid_mtrr_type(value & 0xff))?;
                self.mtrr_def_type = value;
            }
            IA32_MCG_STATUS => self.mcg_status = value,
            IA32_MCG_CTL => {
                // Without MCG_CTL_P only the VMM may write it, and only 0.
                ok(by == By::Vmm && value == 0)?;
                self.mcg_ctl = value;
            }
            i if (IA32_MC0_CTL2..IA32_MC0_CTL2 + MCE_BANKS).contains(&i) => ok(by == By::Vmm && value == 0)?,
            i if (IA32_MC0_CTL..IA32_MC0_CTL + 4 * MCE_BANKS).contains(&i) => {
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
                let base = (i - IA32_MTRR_PHYSBASE0) % 2 == 0;
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
                // MTRRcap, MCG_CAP, P5_MC_*: read-only; the paravirtual
                // clock: not the guest's.
                None => return Err(Refused),
            },
        }
        Ok(())
    }
}
