//! Tests of hw/cr.rs, the rules for CR0, CR4 and EFER values that a MOV to
//! CR0/CR4 and KVM_SET_SREGS share: known cases from the SDM, and a seeded
//! fuzz run of the property that ties the two together: from any state
//! KVM_SET_SREGS accepts, a MOV rvmx accepts leads to a state
//! KVM_SET_SREGS accepts too (so the guest can never reach, by itself, a
//! state the VMM could not set).

use crate::cr::*;
use crate::Rng;
use std::println;

/// Bochs 2.7's IA32_VMX_CR4_FIXED1.
const FIXED1: u64 = 0x0037_27ff;
const PROT: u64 = CR0_PE | CR0_NE;
const PAGED: u64 = PROT | CR0_PG;

#[test]
fn known_cases() {
    assert!(cr0_valid(PAGED) && !cr0_valid(CR0_PG) && !cr0_valid(CR0_NW) && !cr0_valid(1 << 32));
    assert!(cr4_valid(CR4_PAE, FIXED1) && !cr4_valid(CR4_VMXE, FIXED1) && !cr4_valid(1 << 22, FIXED1));
    // Entering long mode: PAE needed, and 32-bit code.
    assert_eq!(mov_to_cr0(PROT, PAGED, EFER_LME, CR4_PAE, false), Some(EFER_LME | EFER_LMA));
    assert_eq!(mov_to_cr0(PROT, PAGED, EFER_LME, 0, false), None);
    assert_eq!(mov_to_cr0(PROT, PAGED, EFER_LME, CR4_PAE, true), None);
    // Paging without long mode.
    assert_eq!(mov_to_cr0(PROT, PAGED, 0, 0, false), Some(0));
    // Leaving long mode: not from 64-bit code, not with PCIDs on.
    assert_eq!(mov_to_cr0(PAGED, PROT, EFER_LME | EFER_LMA, CR4_PAE, false), Some(EFER_LME));
    assert_eq!(mov_to_cr0(PAGED, PROT, EFER_LME | EFER_LMA, CR4_PAE, true), None);
    assert_eq!(mov_to_cr0(PAGED, PROT, EFER_LME | EFER_LMA, CR4_PAE | CR4_PCIDE, false), None);
    // CR4: PAE stays on in long mode; PCIDE only in long mode, CR3[11:0] = 0.
    let lm = EFER_LME | EFER_LMA;
    assert!(!mov_to_cr4(CR4_PAE, 0, lm, 0x1000, FIXED1));
    assert!(mov_to_cr4(CR4_PAE, CR4_PAE | CR4_PCIDE, lm, 0x1000, FIXED1));
    assert!(!mov_to_cr4(CR4_PAE, CR4_PAE | CR4_PCIDE, lm, 0x1001, FIXED1));
    assert!(!mov_to_cr4(0, CR4_PCIDE, 0, 0, FIXED1));
    // KVM_SET_SREGS.
    assert!(sregs_valid(PAGED, CR4_PAE, lm, FIXED1));
    assert!(!sregs_valid(PAGED, 0, lm, FIXED1));
    assert!(!sregs_valid(PROT, 0, EFER_LMA, FIXED1));
    assert!(sregs_valid(PROT, 0, EFER_LME, FIXED1));
}

#[test]
fn fuzz_moves_stay_settable() {
    let seed = crate::seed();
    println!("cr fuzz: seed {seed} (RVMX_SEED={seed} to repeat)");
    let mut rng = Rng::new(seed);
    let bits0 = [CR0_PE, CR0_NE, CR0_NW, CR0_CD, CR0_PG, 1 << 16, 1 << 32];
    let bits4 = [CR4_PAE, CR4_PCIDE, CR4_VMXE, 1 << 7, 1 << 9, 1 << 10, 1 << 18, 1 << 22];
    let bitse = [EFER_LME, EFER_LMA, 1, 1 << 11];
    let pick = |rng: &mut Rng, bits: &[u64]| bits.iter().fold(0, |v, b| if rng.below(2) == 0 { v | b } else { v });
    let (mut start, mut accepted) = (0u32, 0u32);
    for _ in 0..1_000_000 {
        let (cr0, cr4, efer) = (pick(&mut rng, &bits0), pick(&mut rng, &bits4), pick(&mut rng, &bitse));
        let cr3 = rng.next() & 0x1fff;
        if !sregs_valid(cr0, cr4, efer, FIXED1) {
            continue;
        }
        start += 1;
        let cs_l = efer & EFER_LMA != 0 && rng.below(2) == 0;
        let new0 = pick(&mut rng, &bits0);
        if let Some(e) = mov_to_cr0(cr0, new0, efer, cr4, cs_l) {
            accepted += 1;
            assert!(sregs_valid(new0, cr4, e, FIXED1), "MOV CR0 {cr0:#x} -> {new0:#x} (CR4 {cr4:#x}, EFER {efer:#x} -> {e:#x})");
        }
        let new4 = pick(&mut rng, &bits4);
        if mov_to_cr4(cr4, new4, efer, cr3, FIXED1) {
            accepted += 1;
            assert!(sregs_valid(cr0, new4, efer, FIXED1), "MOV CR4 {cr4:#x} -> {new4:#x} (CR0 {cr0:#x}, EFER {efer:#x})");
        }
    }
    println!("cr fuzz: {start} valid states, {accepted} MOVs accepted, each leading to a valid state");
    assert!(start > 10_000 && accepted > 5_000, "the fuzz reached too few states");
}
