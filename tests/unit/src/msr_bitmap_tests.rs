//! Tests of msrs/bitmap.rs, the MSR bitmap's layout: positions given by
//! the SDM (Vol. 3C §25.6.9) for a few MSRs, every covered (MSR, direction)
//! on its own bit, and a seeded fuzz run: random sets of MSRs passed in
//! random directions, then 1,000,000 random accesses, each of which must
//! exit exactly when it was not passed (or lies outside the bitmap).

use crate::msr_bitmap::*;
use crate::Rng;
use std::{collections::HashSet, println, vec::Vec};

#[test]
fn positions_from_the_sdm() {
    // Reads of the low range from byte 0, of the high range from 1024;
    // writes of each from 2048 and 3072.
    assert_eq!(position(0x10, Access::Read), Some((2, 0)));
    assert_eq!(position(0x1fff, Access::Read), Some((1023, 7)));
    assert_eq!(position(0xc000_0082, Access::Read), Some((1040, 2)));
    assert_eq!(position(0x174, Access::Write), Some((2094, 4)));
    assert_eq!(position(0xc000_0100, Access::Write), Some((3104, 0)));
    assert_eq!(position(0xc000_1fff, Access::Write), Some((4095, 7)));
    for outside in [0x2000, 0x4000_0000, 0xbfff_ffff, 0xc000_2000, 0xffff_ffff] {
        assert_eq!(position(outside, Access::Read), None);
        assert_eq!(position(outside, Access::Write), None);
    }
}

#[test]
fn every_covered_access_has_its_own_bit() {
    let mut seen = HashSet::new();
    for base in [0u32, 0xc000_0000] {
        for index in base..base + 0x2000 {
            for access in [Access::Read, Access::Write] {
                let p = position(index, access).unwrap();
                assert!(p.0 < 4096 && p.1 < 8);
                assert!(seen.insert(p), "{index:#x} {access:?} shares {p:?}");
            }
        }
    }
    assert_eq!(seen.len(), 4096 * 8);
}

/// An MSR index: mostly in or near the two ranges, sometimes anywhere.
fn some_index(r: &mut Rng) -> u32 {
    // CAST: below 2^32 or offsets below 0x2100.
    match r.below(4) {
        0 => r.below(0x2100) as u32,
        1 => 0xc000_0000 + r.below(0x2100) as u32,
        2 => (0xc000_0000u32).wrapping_sub(1 + r.below(16) as u32),
        _ => r.next() as u32,
    }
}

#[test]
fn fuzz_pass_then_access() {
    let seed = crate::seed();
    println!("msr bitmap fuzz: seed {seed} (RVMX_SEED={seed} to repeat)");
    let mut r = Rng::new(seed);
    let mut accesses = 0u64;
    while accesses < 1_000_000 {
        let mut bitmap: MsrBitmap = [0; 4096];
        intercept_all(&mut bitmap);
        let mut passed = Vec::new();
        for _ in 0..r.below(64) {
            let m = (some_index(&mut r), if r.below(2) == 0 { Access::Read } else { Access::Write });
            pass(&mut bitmap, m.0, m.1);
            passed.push(m);
        }
        for _ in 0..10_000 {
            let (index, access) = if r.below(4) == 0 && !passed.is_empty() {
                let p = r.pick(&passed);
                // The same MSR in the other direction, sometimes.
                (p.0, if r.below(3) == 0 { if p.1 == Access::Read { Access::Write } else { Access::Read } } else { p.1 })
            } else {
                (some_index(&mut r), if r.below(2) == 0 { Access::Read } else { Access::Write })
            };
            let expect = position(index, access).is_none() || !passed.contains(&(index, access));
            assert_eq!(exits(&bitmap, index, access), expect, "seed {seed}: {index:#x} {access:?}");
            accesses += 1;
        }
    }
    println!("msr bitmap fuzz: {accesses} accesses checked");
}
