//! Tests of exits/exception_rules.rs: DR6 after a #DB rvmx delivers, from
//! the SDM's cases and KVM's selftest values, then a seeded fuzz run of
//! the properties every result must have; and which vectors are faults.

use crate::exception_rules::*;
use crate::Rng;
use std::println;

const DR6_RESET: u64 = 0xffff_0ff0;

#[test]
fn known_cases() {
    // A single step from a quiet DR6: BS (bit 14) is all that changes.
    assert_eq!(dr6_after_debug_exception(DR6_RESET, DR6_BS), 0xffff_4ff0);
    // A data breakpoint on DR1 after one on DR0: B0-B3 are rewritten,
    // sticky BS stays.
    assert_eq!(dr6_after_debug_exception(0xffff_4ff1, 0b10), 0xffff_4ff2);
    // General detect.
    assert_eq!(dr6_after_debug_exception(DR6_RESET, DR6_BD), 0xffff_2ff0);
    // RTM is active high in the payload, active low in DR6.
    assert_eq!(dr6_after_debug_exception(DR6_RESET, DR6_RTM | 1), 0xfffe_0ff1);
    // Bit 12 ("enabled breakpoint") exists in the payload only.
    assert_eq!(dr6_after_debug_exception(DR6_RESET, 1 << 12 | 4), 0xffff_0ff4);
    // Bits 63:32 of the payload are reserved: never in DR6.
    assert_eq!(dr6_after_debug_exception(DR6_RESET, 1 << 40 | DR6_BS), 0xffff_4ff0);
}

#[test]
fn fuzz_dr6_properties() {
    let seed = crate::seed();
    println!("exception_rules fuzz: seed {seed} (RVMX_SEED={seed} to reproduce), 1,000,000 cases");
    let mut rng = Rng::new(seed);
    for _ in 0..1_000_000 {
        // A DR6 the guest could hold (dr.rs keeps that form), and any payload.
        let dr6 = (rng.next() & DR6_VOLATILE) | DR6_ACTIVE_LOW;
        let payload = if rng.below(2) == 0 { rng.next() } else { rng.next() & 0x1_f00f };
        let d = dr6_after_debug_exception(dr6, payload);
        assert_eq!(d >> 32, 0, "dr6 {dr6:#x} payload {payload:#x}");
        assert_eq!(d & DR6_FIXED_1, DR6_FIXED_1, "fixed bits, dr6 {dr6:#x} payload {payload:#x}");
        assert_eq!(d & (1 << 12), 0);
        assert_eq!(d & DR6_TRAP_BITS, payload & DR6_TRAP_BITS, "B0-B3 are the payload's");
        // Sticky bits: what was set stays, what the payload sets is set.
        for bit in [DR6_BD, DR6_BS, 1 << 15] {
            assert_eq!(d & bit != 0, dr6 & bit != 0 || payload & bit != 0);
        }
        // RTM reads 0 exactly when the payload reports it.
        assert_eq!(d & DR6_RTM == 0, payload & DR6_RTM != 0);
        // Delivering the same #DB twice changes nothing more.
        assert_eq!(dr6_after_debug_exception(d, payload), d);
    }
}

#[test]
fn faults() {
    // SDM Vol. 3A table 6-1: traps #DB (1), #BP (3), #OF (4); aborts #DF
    // (8), #MC (18); the NMI (2) is an interrupt; the rest are faults.
    let faults: std::vec::Vec<u8> = (0..32).filter(|&v| is_fault(v)).collect();
    assert_eq!(faults, [0, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);
    assert!(!is_fault(32) && !is_fault(255));
}
