//! Tests of vmcs/qualification.rs: the SDM's own examples, and a seeded
//! round trip: qualifications built field by field from the SDM's tables
//! (with random values in the bits each type ignores) read back the same
//! fields.

use crate::qualification::*;
use crate::Rng;
use std::println;

#[test]
fn known_cases() {
    // OUT 0x80, AL (port immediate): what rvmx's tracepoint test sees.
    let q = IoQual(0x0080_0040);
    assert_eq!((q.port(), q.size(), q.is_in(), q.string(), q.rep(), q.immediate()), (0x80, 1, false, false, false, true));
    // REP INSW with DX = 0x1f0.
    let q = IoQual(0x01f0_0039);
    assert_eq!((q.port(), q.size(), q.is_in(), q.string(), q.rep(), q.immediate()), (0x1f0, 2, true, true, true, false));
    // MOV CR0, RAX; MOV RBX, CR8; LMSW.
    assert_eq!((CrQual(0x000).cr(), CrQual(0x000).access(), CrQual(0x000).gpr()), (0, CrAccess::MovTo, 0));
    assert_eq!((CrQual(0x318).cr(), CrQual(0x318).access(), CrQual(0x318).gpr()), (8, CrAccess::MovFrom, 3));
    assert_eq!(CrQual(0x30).access(), CrAccess::Lmsw);
    // MOV DR7, RCX and MOV RDX, DR6.
    assert_eq!((DrQual(0x107).dr(), DrQual(0x107).reads_dr(), DrQual(0x107).gpr()), (7, false, 1));
    assert_eq!((DrQual(0x216).dr(), DrQual(0x216).reads_dr(), DrQual(0x216).gpr()), (6, true, 2));
    // A write to a page, linear address valid: not a page walk. The same
    // with bit 8 clear: the CPU was walking the guest's page tables.
    let (w, walk) = (EptQual(0x182), EptQual(0x82));
    assert!(w.write() && !w.read() && !w.fetch() && !w.in_page_walk() && walk.in_page_walk());
    assert!(EptQual(1 << 12).nmi_unblocking() && !EptQual(0x184).nmi_unblocking());
}

#[test]
fn fuzz_round_trip() {
    let seed = std::env::var("RVMX_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x9a11_f00d_u64);
    let mut r = Rng::new(seed);
    for _ in 0..100_000 {
        // I/O: size - 1 in 2:0 (0, 1 or 3), direction 3, string 4, REP 5,
        // immediate 6, port 31:16; the rest is junk the type must ignore.
        let (size, is_in, string, rep, imm, port) = (r.pick(&[1u8, 2, 4]), r.below(2) == 1, r.below(2) == 1, r.below(2) == 1, r.below(2) == 1, r.below(1 << 16) as u16);
        let junk = r.next() & !0xffff_007f;
        let raw = junk | u64::from(size - 1) | u64::from(is_in) << 3 | u64::from(string) << 4 | u64::from(rep) << 5 | u64::from(imm) << 6 | u64::from(port) << 16;
        let q = IoQual(raw);
        assert_eq!((q.size(), q.is_in(), q.string(), q.rep(), q.immediate(), q.port()), (size, is_in, string, rep, imm, port), "{raw:#x}");
        // CR access: CR 3:0, access 5:4, register 11:8.
        let (cr, access, gpr) = (r.pick(&[0u64, 3, 4, 8]), r.below(4), r.below(16) as usize);
        let raw = (r.next() & !0xf3f) | cr | access << 4 | (gpr as u64) << 8;
        let q = CrQual(raw);
        let want = [CrAccess::MovTo, CrAccess::MovFrom, CrAccess::Clts, CrAccess::Lmsw][access as usize];
        assert_eq!((q.cr(), q.access(), q.gpr()), (cr, want, gpr), "{raw:#x}");
        // DR access: DR 2:0, direction 4, register 11:8.
        let (dr, reads, gpr) = (r.below(8), r.below(2) == 1, r.below(16) as usize);
        let raw = (r.next() & !0xf17) | dr | u64::from(reads) << 4 | (gpr as u64) << 8;
        let q = DrQual(raw);
        assert_eq!((q.dr(), q.reads_dr(), q.gpr()), (dr, reads, gpr), "{raw:#x}");
    }
    println!("qualification fuzz: seed {seed} (RVMX_SEED={seed} repeats), 100000 of each type round-tripped");
}
