//! Tests of msrs/emulated.rs, the software-only MSRs (MTRRs, machine
//! check, KVM's paravirtual clock MSRs): KVM's rules case by case
//! (arch/x86/kvm/mtrr.c, x86.c set_msr_mce/get_msr_mce), then a seeded fuzz
//! run: random accesses by the guest and the VMM, where a value accepted
//! is read back unchanged, a refused write changes nothing, and nothing
//! outside `has` is ever accepted.

use crate::emulated::*;
use crate::Rng;
use std::println;

const G: By = By::Guest;
const V: By = By::Vmm;

#[test]
fn known_cases() {
    let mut m = EmulatedMsrs::new(40);
    // MTRRcap: WC, fixed ranges, 8 variable ranges; read-only.
    assert_eq!(m.get(IA32_MTRRCAP, G), Ok(0x508));
    assert_eq!(m.set(IA32_MTRRCAP, 0x508, V), Err(Refused));
    // MTRRdefType: type 6 (WB) with E and FE; reserved bits and type 2 refused.
    assert_eq!(m.set(IA32_MTRR_DEF_TYPE, 0xc06, G), Ok(()));
    assert_eq!(m.get(IA32_MTRR_DEF_TYPE, V), Ok(0xc06));
    assert_eq!(m.set(IA32_MTRR_DEF_TYPE, 0x1006, G), Err(Refused));
    assert_eq!(m.set(IA32_MTRR_DEF_TYPE, 0x2, G), Err(Refused));
    // Fixed ranges: every byte a valid type.
    assert_eq!(m.set(IA32_MTRR_FIX4K_F8000, 0x0606_0606_0505_0404, V), Ok(()));
    assert_eq!(m.set(IA32_MTRR_FIX16K_A0000, 0x0606_0606_0606_0603, V), Err(Refused));
    assert_eq!(m.get(IA32_MTRR_FIX4K_F8000, G), Ok(0x0606_0606_0505_0404));
    // Variable ranges: base with a type, mask with the valid bit; bits above
    // MAXPHYADDR (40 here) and the reserved low bits refused.
    assert_eq!(m.set(IA32_MTRR_PHYSBASE0, 0xc000_0000, V), Ok(()));
    assert_eq!(m.set(IA32_MTRR_PHYSBASE0 + 1, 0xff_c000_0800, V), Ok(()));
    assert_eq!(m.set(IA32_MTRR_PHYSBASE0 + 1, 0x1ff_c000_0800, V), Err(Refused));
    assert_eq!(m.set(IA32_MTRR_PHYSBASE0 + 2, 0x100, G), Err(Refused));
    assert_eq!(m.set(IA32_MTRR_PHYSBASE0 + 3, 0x400, G), Err(Refused));
    assert_eq!(m.get(IA32_MTRR_PHYSBASE0 + 1, G), Ok(0xff_c000_0800));
    // Not MTRRs: between the fixed ranges, beyond the 8 pairs.
    assert!(!EmulatedMsrs::has(0x251) && !EmulatedMsrs::has(0x210) && !EmulatedMsrs::has(0x270));
    // Machine check: 32 banks, no MCG_CTL, no CMCI.
    assert_eq!(m.get(IA32_MCG_CAP, G), Ok(32));
    assert_eq!(m.set(IA32_MCG_CAP, 32, V), Err(Refused));
    assert_eq!(m.set(IA32_MCG_STATUS, 4, G), Ok(()));
    assert_eq!(m.get(IA32_MCG_CTL, G), Err(Refused));
    assert_eq!(m.get(IA32_MCG_CTL, V), Ok(0));
    assert_eq!(m.set(IA32_MCG_CTL, 0, V), Ok(()));
    assert_eq!(m.set(IA32_MCG_CTL, 0, G), Err(Refused));
    assert_eq!(m.set(IA32_MC0_CTL2 + 5, 0, V), Ok(()));
    assert_eq!(m.set(IA32_MC0_CTL2 + 5, 1, V), Err(Refused));
    assert_eq!(m.get(IA32_MC0_CTL2, G), Err(Refused));
    // MCi_CTL: 0 or all ones (bits 10 and 0 may be clear).
    assert_eq!(m.set(IA32_MC0_CTL, !0, G), Ok(()));
    assert_eq!(m.set(IA32_MC0_CTL + 4, !(1 << 10), G), Ok(()));
    assert_eq!(m.set(IA32_MC0_CTL + 8, 0xff, G), Err(Refused));
    // MCi_STATUS: the guest may only clear it, the VMM may restore it.
    assert_eq!(m.set(IA32_MC0_CTL + 1, 1, G), Err(Refused));
    assert_eq!(m.set(IA32_MC0_CTL + 1, 1, V), Ok(()));
    assert_eq!(m.set(IA32_MC0_CTL + 1, 0, G), Ok(()));
    // ADDR and MISC: anything.
    assert_eq!(m.set(IA32_MC0_CTL + 4 * 31 + 3, 0x1234, G), Ok(()));
    assert_eq!(m.get(IA32_MC0_CTL + 4 * 31 + 3, V), Ok(0x1234));
    assert!(!EmulatedMsrs::has(IA32_MC0_CTL + 4 * 32));
    assert_eq!(m.get(IA32_P5_MC_ADDR, G), Ok(0));
    assert_eq!(m.set(IA32_P5_MC_TYPE, 0, V), Err(Refused));
    // KVM's old paravirtual clock MSRs: the VMM's only.
    assert_eq!(m.set(MSR_KVM_SYSTEM_TIME, 0, V), Ok(()));
    assert_eq!(m.set(MSR_KVM_WALL_CLOCK, 0x1000, V), Ok(()));
    assert_eq!(m.get(MSR_KVM_WALL_CLOCK, V), Ok(0x1000));
    assert_eq!(m.get(MSR_KVM_SYSTEM_TIME, G), Err(Refused));
    assert_eq!(m.set(MSR_KVM_SYSTEM_TIME, 1, G), Err(Refused));
}

#[test]
fn setup_mce() {
    let mut m = EmulatedMsrs::new(40);
    // KVM's checks: 1 to 32 banks, only the offered capabilities.
    assert_eq!(m.setup_mce(0), Err(Refused));
    assert_eq!(m.setup_mce(33), Err(Refused));
    assert_eq!(m.setup_mce((1 << 10) | 10), Err(Refused));
    assert_eq!(m.get(IA32_MCG_CAP, G), Ok(32));
    // QEMU's qemu64: MCG_CTL_P | MCG_SER_P, 10 banks.
    assert_eq!(m.setup_mce(SUPPORTED_MCE_CAP | 10), Ok(()));
    assert_eq!(m.get(IA32_MCG_CAP, G), Ok(SUPPORTED_MCE_CAP | 10));
    // MCG_CTL: now the guest's, all ones after the setup, 0 or all ones only.
    assert_eq!(m.get(IA32_MCG_CTL, G), Ok(!0));
    assert_eq!(m.set(IA32_MCG_CTL, 0, G), Ok(()));
    assert_eq!(m.set(IA32_MCG_CTL, 5, V), Err(Refused));
    assert_eq!(m.set(IA32_MCG_CTL, !0, V), Ok(()));
    // Ten banks, each CTL all ones; the eleventh does not exist.
    assert_eq!(m.get(IA32_MC0_CTL + 4 * 9, G), Ok(!0));
    assert_eq!(m.get(IA32_MC0_CTL + 4 * 10, V), Err(Refused));
    assert_eq!(m.set(IA32_MC0_CTL + 4 * 10 + 2, 0, V), Err(Refused));
    assert_eq!(m.set(IA32_MC0_CTL2 + 10, 0, V), Err(Refused));
    assert_eq!(m.set(IA32_MC0_CTL2 + 9, 0, V), Ok(()));
}

#[test]
fn boot_time_msrs() {
    let mut m = EmulatedMsrs::new(40);
    // Linux's microcode-revision read: write 0, read back; the guest's
    // write changes nothing, the VMM's sets the revision.
    assert_eq!(m.get(IA32_BIOS_SIGN_ID, G), Ok(0x1_0000_0000));
    assert_eq!(m.set(IA32_BIOS_SIGN_ID, 0, G), Ok(()));
    assert_eq!(m.get(IA32_BIOS_SIGN_ID, G), Ok(0x1_0000_0000));
    assert_eq!(m.set(IA32_BIOS_SIGN_ID, 0x42_0000_0000, V), Ok(()));
    assert_eq!(m.get(IA32_BIOS_SIGN_ID, G), Ok(0x42_0000_0000));
    // MISC_ENABLE: BTS/PEBS unavailable at reset and read-only for the
    // guest; the performance-monitoring bit ignored; the rest kept.
    assert_eq!(m.get(IA32_MISC_ENABLE, G), Ok(0x1800));
    assert_eq!(m.set(IA32_MISC_ENABLE, 0x800, G), Err(Refused));
    assert_eq!(m.set(IA32_MISC_ENABLE, 0x1881, G), Ok(()));
    assert_eq!(m.get(IA32_MISC_ENABLE, G), Ok(0x1801));
    assert_eq!(m.set(IA32_MISC_ENABLE, 0x80, V), Ok(()));
    assert_eq!(m.get(IA32_MISC_ENABLE, G), Ok(0x80));
    // FEATURE_CONTROL: no VMX for the guest; it may lock, then nothing.
    assert_eq!(m.get(IA32_FEATURE_CONTROL, G), Ok(0));
    assert_eq!(m.set(IA32_FEATURE_CONTROL, 0x5, G), Err(Refused));
    assert_eq!(m.set(IA32_FEATURE_CONTROL, 0x1, G), Ok(()));
    assert_eq!(m.set(IA32_FEATURE_CONTROL, 0x1, G), Err(Refused));
    assert_eq!(m.set(IA32_FEATURE_CONTROL, 0x5, V), Ok(()));
    assert_eq!(m.set(IA32_FEATURE_CONTROL, 0x8, V), Err(Refused));
    // Constants, as KVM reports them; read-only.
    assert_eq!(m.get(IA32_PERF_STATUS, G), Ok(1000 | (4 << 40)));
    assert_eq!(m.get(MSR_EBC_FREQUENCY_ID, G), Ok(1 << 24));
    assert_eq!(m.get(IA32_BBL_CR_CTL3, G), Ok(0xbe70_2111));
    assert_eq!(m.get(IA32_PLATFORM_ID, G), Ok(0));
    assert_eq!(m.set(IA32_PERF_CTL, 0, G), Err(Refused));
    // CPUID faulting, as in KVM: offered at reset, off; the guest may turn
    // it on (bit 0 only); PLATFORM_INFO is the VMM's, which may not take
    // faulting away while it is on, and without it faulting cannot be on.
    assert_eq!(m.get(MSR_PLATFORM_INFO, G), Ok(1 << 31));
    assert_eq!(m.get(MSR_MISC_FEATURES_ENABLES, G), Ok(0));
    assert!(!m.cpuid_faulting());
    assert_eq!(m.set(MSR_PLATFORM_INFO, 1 << 31, G), Err(Refused));
    assert_eq!(m.set(MSR_MISC_FEATURES_ENABLES, 2, G), Err(Refused));
    assert_eq!(m.set(MSR_MISC_FEATURES_ENABLES, 1, G), Ok(()));
    assert!(m.cpuid_faulting());
    assert_eq!(m.set(MSR_PLATFORM_INFO, 0, V), Err(Refused));
    assert_eq!(m.set(MSR_MISC_FEATURES_ENABLES, 0, G), Ok(()));
    assert!(!m.cpuid_faulting());
    assert_eq!(m.set(MSR_PLATFORM_INFO, 0, V), Ok(()));
    assert_eq!(m.set(MSR_MISC_FEATURES_ENABLES, 1, V), Err(Refused));
    assert_eq!(m.set(MSR_PLATFORM_INFO, 1 << 31, V), Ok(()));
    // The SMI count: the VMM's to restore.
    assert_eq!(m.set(MSR_SMI_COUNT, 3, G), Err(Refused));
    assert_eq!(m.set(MSR_SMI_COUNT, 3, V), Ok(()));
    assert_eq!(m.get(MSR_SMI_COUNT, G), Ok(3));
    // AMD's HWCR: TscFreqSel and McStatusWrEn kept, three bits ignored.
    assert_eq!(m.set(MSR_K7_HWCR, (1 << 24) | 0x148, G), Ok(()));
    assert_eq!(m.get(MSR_K7_HWCR, G), Ok(1 << 24));
    assert_eq!(m.set(MSR_K7_HWCR, 1, G), Err(Refused));
    // DEBUGCTL: BTF and LBR dropped, anything else #GP.
    assert_eq!(debugctl_write(0), Ok(0));
    assert_eq!(debugctl_write(3), Ok(0));
    assert_eq!(debugctl_write(1 << 6), Err(Refused));
    assert_eq!(debugctl_write(u64::MAX), Err(Refused));
}

/// Every MSR index emulated.rs knows outside the MTRR and bank ranges.
const SINGLES: [u32; 24] = [
    IA32_P5_MC_ADDR, IA32_P5_MC_TYPE, MSR_KVM_WALL_CLOCK, MSR_KVM_SYSTEM_TIME, IA32_MTRRCAP, IA32_MCG_CAP,
    IA32_MCG_STATUS, IA32_MCG_CTL, IA32_MTRR_DEF_TYPE, IA32_PLATFORM_ID, IA32_EBL_CR_POWERON, MSR_EBC_FREQUENCY_ID,
    MSR_SMI_COUNT, IA32_FEATURE_CONTROL, IA32_BIOS_SIGN_ID, MSR_PLATFORM_INFO, IA32_BBL_CR_CTL3,
    MSR_MISC_FEATURES_ENABLES, IA32_PERF_STATUS, IA32_PERF_CTL, IA32_MISC_ENABLE, MSR_IA32_POWER_CTL, MSR_K7_HWCR,
    0x1d9,
];

/// An MSR index near the ones emulated.rs knows, or anywhere.
fn some_index(r: &mut Rng) -> u32 {
    // CAST: small offsets and any u32.
    match r.below(7) {
        0 => r.below(0x20) as u32,
        6 => SINGLES[r.below(SINGLES.len() as u64) as usize],
        1 => 0xf0 + r.below(0x20) as u32,
        2 => 0x170 + r.below(0x20) as u32,
        3 => 0x200 + r.below(0x100) as u32,
        4 => 0x400 + r.below(0x90) as u32,
        _ => r.next() as u32,
    }
}

fn some_value(r: &mut Rng) -> u64 {
    match r.below(6) {
        0 => 0,
        1 => !0,
        5 => 1 << r.below(64),
        2 => r.below(0x1000),
        3 => u64::from_le_bytes([6, 6, 6, 6, 6, 6, 6, r.below(8) as u8]),
        _ => r.next(),
    }
}

#[test]
fn fuzz_accesses() {
    let seed = crate::seed();
    println!("emulated msr fuzz: seed {seed} (RVMX_SEED={seed} to repeat)");
    let mut r = Rng::new(seed);
    let mut m = EmulatedMsrs::new(36 + r.below(17) as u32);
    // Half the runs with QEMU's machine-check set-up (fewer banks, MCG_CTL).
    if r.below(2) == 0 {
        assert_eq!(m.setup_mce(SUPPORTED_MCE_CAP | (1 + r.below(32))), Ok(()));
    }
    let (mut accepted, mut n, mut faulting) = (0u64, 0u64, 0u64);
    while n < 1_000_000 {
        n += 1;
        let (index, value) = (some_index(&mut r), some_value(&mut r));
        let by = if r.below(2) == 0 { By::Guest } else { By::Vmm };
        let before = m.get(index, By::Vmm);
        match m.set(index, value, by) {
            Ok(()) => {
                accepted += 1;
                assert!(EmulatedMsrs::has(index), "seed {seed}: {index:#x} accepted but not known");
                // Read back as the VMM: the value written (CTL2 and
                // MCG_CTL only ever hold 0), but for the bits a write
                // ignores.
                let old = before.unwrap_or(0);
                let expect = match (index, by) {
                    (IA32_BIOS_SIGN_ID, By::Guest) => old,
                    (IA32_MISC_ENABLE, By::Guest) => (value & !0x80) | (old & 0x80),
                    (MSR_K7_HWCR, _) => value & !0x148,
                    _ => value,
                };
                assert_eq!(m.get(index, By::Vmm), Ok(expect), "seed {seed}: {index:#x} = {value:#x}");
            }
            Err(Refused) => assert_eq!(m.get(index, By::Vmm), before, "seed {seed}: refused write to {index:#x} changed it"),
        }
        if !EmulatedMsrs::has(index) {
            assert_eq!(m.get(index, by), Err(Refused));
        }
        // CPUID faulting is on exactly when MISC_FEATURES_ENABLES says so,
        // and never without PLATFORM_INFO offering it.
        let misc = m.get(MSR_MISC_FEATURES_ENABLES, By::Vmm);
        assert_eq!(m.cpuid_faulting(), misc == Ok(1), "seed {seed}");
        faulting += u64::from(m.cpuid_faulting());
        assert!(!m.cpuid_faulting() || m.get(MSR_PLATFORM_INFO, By::Vmm).is_ok_and(|p| p & (1 << 31) != 0), "seed {seed}");
    }
    println!("emulated msr fuzz: {n} accesses, {accepted} writes accepted, CPUID faulting on after {faulting}");
}
