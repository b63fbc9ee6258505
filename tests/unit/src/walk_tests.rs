//! Tests of walk.rs over a fake guest memory: each paging mode, each
//! protection check, accessed/dirty bits, entries that change under the
//! walk, and a seeded fuzz run over random page tables.

use crate::addr::{Gpa, Linear};
use crate::walk::{self, pf, segment_room, Access, GuestPhys, Mode, Paging, Segment, WalkError};
use crate::Rng;
use std::println;
use std::vec;
use std::vec::Vec;

/// Guest RAM from guest-physical 0, `pages` pages long.
struct Mem {
    bytes: Vec<u8>,
    /// Entries that change under the walk: how many cmpxchgs fail.
    fail_cmpxchg: usize,
}

impl Mem {
    fn new(pages: usize) -> Self {
        Mem { bytes: vec![0; pages * 4096], fail_cmpxchg: 0 }
    }
    fn set(&mut self, gpa: u64, v: u64) {
        let a = gpa as usize;
        self.bytes[a..a + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(&mut self, gpa: u64, v: u32) {
        let a = gpa as usize;
        self.bytes[a..a + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn get(&self, gpa: u64) -> u64 {
        let a = gpa as usize;
        u64::from_le_bytes(self.bytes[a..a + 8].try_into().unwrap())
    }
}

/// walk::translate with plain numbers, for readable tables of cases.
fn translate(m: &mut Mem, p: &Paging, linear: u64, acc: Access) -> Result<u64, WalkError> {
    walk::translate(m, p, Linear(linear), acc).map(|g| g.0)
}

fn canonical(linear: u64) -> bool {
    walk::canonical(Linear(linear))
}

impl GuestPhys for Mem {
    fn read_entry(&mut self, gpa: Gpa, wide: bool) -> Option<u64> {
        let gpa = gpa.0;
        let n = if wide { 8 } else { 4 };
        let a = usize::try_from(gpa).ok()?;
        let b = self.bytes.get(a..a.checked_add(n)?)?;
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(w))
    }
    fn cmpxchg_entry(&mut self, gpa: Gpa, wide: bool, old: u64, new: u64) -> Option<bool> {
        if self.read_entry(gpa, wide)? != old {
            return Some(false);
        }
        if self.fail_cmpxchg > 0 {
            self.fail_cmpxchg -= 1;
            return Some(false);
        }
        let n = if wide { 8 } else { 4 };
        let a = gpa.0 as usize;
        self.bytes[a..a + n].copy_from_slice(&new.to_le_bytes()[..n]);
        Some(true)
    }
}

const PRW: u64 = 0b011; // present, writable
const PRWU: u64 = 0b111; // present, writable, user
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

fn long(cr3: u64) -> Paging {
    Paging { mode: Mode::Long, cr3, wp: true, nxe: true, smep: false, smap: false, maxphyaddr: 46 }
}

const READ: Access = Access { write: false, fetch: false, user: false, ac: false };
const WRITE: Access = Access { write: true, fetch: false, user: false, ac: false };
const FETCH: Access = Access { write: false, fetch: true, user: false, ac: false };
fn user(a: Access) -> Access {
    Access { user: true, ..a }
}

/// A 4-level table: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000,
/// mapping linear 0x40_0000 + 0x5000 (PD index 2, PT index 5) to page
/// 0x7000 with `leaf` flags, every upper level with `upper` flags.
fn four_level(upper: u64, leaf: u64) -> Mem {
    let mut m = Mem::new(16);
    m.set(0x1000, 0x2000 | upper);
    m.set(0x2000, 0x3000 | upper);
    m.set(0x3000 + 2 * 8, 0x4000 | upper);
    m.set(0x4000 + 5 * 8, 0x7000 | leaf);
    m
}
const LIN: u64 = 0x40_5123;

#[test]
fn long_mode_4k_and_accessed_dirty() {
    let mut m = four_level(PRW, PRW);
    assert_eq!(translate(&mut m, &long(0x1000), LIN, READ), Ok(0x7123));
    assert_eq!(m.get(0x1000) & A, A, "PML4E accessed");
    assert_eq!(m.get(0x4000 + 40) & (A | D), A, "PTE accessed, not dirty");
    assert_eq!(translate(&mut m, &long(0x1000), LIN, WRITE), Ok(0x7123));
    assert_eq!(m.get(0x4000 + 40) & (A | D), A | D, "PTE dirty after a write");
    assert_eq!(m.get(0x3000 + 16) & D, 0, "only the last level gets D");
}

#[test]
fn large_pages() {
    // 2 MiB at PD index 2 -> 0x80_0000; 1 GiB at PDPT index 1 -> 0x4000_0000.
    let mut m = Mem::new(16);
    m.set(0x1000, 0x2000 | PRW);
    m.set(0x2000, 0x3000 | PRW);
    m.set(0x2000 + 8, 0x4000_0000 | PRW | PS);
    m.set(0x3000 + 16, 0x80_0000 | PRW | PS);
    let p = long(0x1000);
    assert_eq!(translate(&mut m, &p, 0x40_5123, READ), Ok(0x80_5123));
    assert_eq!(translate(&mut m, &p, 0x4123_4567, READ), Ok(0x4123_4567));
    // Bit 13 of a 2 MiB PDE is reserved.
    m.set(0x3000 + 16, 0x80_0000 | PRW | PS | (1 << 13));
    assert_eq!(translate(&mut m, &p, 0x40_5123, READ), Err(WalkError::PageFault(pf::PRESENT | pf::RSVD)));
    // PS in a PML4E is reserved.
    m.set(0x1000, 0x2000 | PRW | PS);
    assert_eq!(translate(&mut m, &p, 0x40_5123, READ), Err(WalkError::PageFault(pf::PRESENT | pf::RSVD)));
}

#[test]
fn not_present_and_reserved() {
    let mut m = four_level(PRW, 0);
    assert_eq!(translate(&mut m, &long(0x1000), LIN, WRITE), Err(WalkError::PageFault(pf::WRITE)));
    assert_eq!(m.get(0x1000) & A, 0, "no accessed bits on a failed walk");
    // An address bit above MAXPHYADDR (46), and XD without EFER.NXE.
    let mut m = four_level(PRW, PRW | (1 << 50));
    assert_eq!(translate(&mut m, &long(0x1000), LIN, READ), Err(WalkError::PageFault(pf::PRESENT | pf::RSVD)));
    let mut m = four_level(PRW, PRW | XD);
    let p = Paging { nxe: false, ..long(0x1000) };
    assert_eq!(translate(&mut m, &p, LIN, READ), Err(WalkError::PageFault(pf::PRESENT | pf::RSVD)));
    // Page tables outside guest RAM: a not-present #PF, as in KVM, with
    // the access's bits; CR3 itself outside RAM too. No entry changes.
    let mut m = four_level(PRW, PRW);
    m.set(0x2000, 0x7fff_0000 | PRW);
    assert_eq!(translate(&mut m, &long(0x1000), LIN, READ), Err(WalkError::PageFault(0)));
    assert_eq!(translate(&mut m, &long(0x1000), LIN, WRITE), Err(WalkError::PageFault(pf::WRITE)));
    assert_eq!(m.get(0x1000) & A, 0, "no accessed bits on a failed walk");
    let mut m = four_level(PRW, PRW);
    assert_eq!(translate(&mut m, &long(0x7fff_0000), LIN, READ), Err(WalkError::PageFault(0)));
}

#[test]
fn protection() {
    let p = long(0x1000);
    // Supervisor page, user access.
    let mut m = four_level(PRWU, PRW);
    assert_eq!(translate(&mut m, &p, LIN, user(READ)), Err(WalkError::PageFault(pf::PRESENT | pf::USER)));
    // Read-only page: user write faults; supervisor write faults with
    // CR0.WP and succeeds without it.
    let mut m = four_level(PRWU, 0b101);
    assert_eq!(translate(&mut m, &p, LIN, user(WRITE)), Err(WalkError::PageFault(pf::PRESENT | pf::WRITE | pf::USER)));
    assert_eq!(translate(&mut m, &p, LIN, WRITE), Err(WalkError::PageFault(pf::PRESENT | pf::WRITE)));
    assert_eq!(translate(&mut m, &Paging { wp: false, ..p }, LIN, WRITE), Ok(0x7123));
    // R/W clear at an upper level counts too.
    let mut m = four_level(0b101, PRWU);
    assert_eq!(translate(&mut m, &p, LIN, user(WRITE)), Err(WalkError::PageFault(pf::PRESENT | pf::WRITE | pf::USER)));
    // XD: fetches fault (I/D set), reads do not.
    let mut m = four_level(PRW, PRW | XD);
    assert_eq!(translate(&mut m, &p, LIN, FETCH), Err(WalkError::PageFault(pf::PRESENT | pf::FETCH)));
    assert_eq!(translate(&mut m, &p, LIN, READ), Ok(0x7123));
    // SMEP: no supervisor fetch from a user page; SMAP: no supervisor data
    // access to a user page unless RFLAGS.AC.
    let mut m = four_level(PRWU, PRWU);
    let sm = Paging { smep: true, smap: true, ..p };
    assert_eq!(translate(&mut m, &sm, LIN, FETCH), Err(WalkError::PageFault(pf::PRESENT | pf::FETCH)));
    assert_eq!(translate(&mut m, &sm, LIN, READ), Err(WalkError::PageFault(pf::PRESENT)));
    assert_eq!(translate(&mut m, &sm, LIN, Access { ac: true, ..READ }), Ok(0x7123));
    assert_eq!(translate(&mut m, &sm, LIN, user(FETCH)), Ok(0x7123));
}

#[test]
fn bits32_and_pae() {
    // 32-bit: PD at 0x1000, PT at 0x2000; linear 0x0040_3abc -> 0x5abc.
    let mut m = Mem::new(16);
    m.set32(0x1000 + 4, 0x2000 | 0b111);
    m.set32(0x2000 + 3 * 4, 0x5000 | 0b111);
    let p32 = Paging { mode: Mode::Bits32 { pse: false }, cr3: 0x1000, wp: true, nxe: false, smep: false, smap: false, maxphyaddr: 36 };
    assert_eq!(translate(&mut m, &p32, 0x0040_3abc, user(WRITE)), Ok(0x5abc));
    assert_eq!(m.get(0x2000 + 12) & 0xffff_ffff & (A | D), A | D);
    // A 4 MiB page with PSE (and PSE-36 address bits 39:32 = 0x3);
    // without PSE the PS bit is ignored and the entry is a table.
    m.set32(0x1000 + 8, 0x0080_0000 | (0x3 << 13) | 0b111 | PS as u32);
    let pse = Paging { mode: Mode::Bits32 { pse: true }, ..p32 };
    assert_eq!(translate(&mut m, &pse, 0x0081_2345, READ), Ok(0x3_0081_2345));
    // PAE: PDPTE 1 -> PD 0x3000; PD index 0 -> PT 0x4000; PT index 1 -> 0x6000.
    let mut m = Mem::new(16);
    m.set(0x3000, 0x4000 | PRWU);
    m.set(0x4000 + 8, 0x6000 | PRWU | XD);
    let pae = Paging { mode: Mode::Pae { pdptes: [0, 0x3000 | 1, 0, 0] }, cr3: 0, wp: true, nxe: true, smep: false, smap: false, maxphyaddr: 36 };
    assert_eq!(translate(&mut m, &pae, 0x4000_1010, READ), Ok(0x6010));
    assert_eq!(translate(&mut m, &pae, 0x4000_1010, FETCH), Err(WalkError::PageFault(pf::PRESENT | pf::FETCH)));
    assert_eq!(translate(&mut m, &pae, 0x0000_1010, READ), Err(WalkError::PageFault(0)), "PDPTE 0 not present");
    // Paging off: linear is physical.
    let off = Paging { mode: Mode::Off, ..pae };
    assert_eq!(translate(&mut m, &off, 0xdead_beef, WRITE), Ok(0xdead_beef));
}

#[test]
fn entries_changing_under_the_walk() {
    let mut m = four_level(PRW, PRW);
    m.fail_cmpxchg = 2;
    assert_eq!(translate(&mut m, &long(0x1000), LIN, WRITE), Ok(0x7123), "retried");
    let mut m = four_level(PRW, PRW);
    m.fail_cmpxchg = usize::MAX;
    assert_eq!(translate(&mut m, &long(0x1000), LIN, WRITE), Err(WalkError::Unhandled), "bounded retries");
}

#[test]
fn canonical_addresses() {
    assert!(canonical(0x0000_7fff_ffff_ffff));
    assert!(canonical(0xffff_8000_0000_0000));
    assert!(!canonical(0x0000_8000_0000_0000));
    assert!(!canonical(0xfff0_0000_0000_0000));
}

/// A random page-table entry: mostly pointing into the fake memory, with
/// random flags, sometimes random garbage.
fn random_entry(rng: &mut Rng, pages: u64) -> u64 {
    match rng.below(8) {
        0 => rng.next(),
        1 => 0,
        _ => {
            let page = rng.below(pages + 2) << 12; // sometimes past the end
            let mut flags = rng.next() & 0x1ff;
            if rng.below(4) == 0 {
                flags |= rng.next() & 0xfff0_0000_0000_0e00; // high and ignored bits
            }
            page | flags | 1
        }
    }
}

fn random_linear(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => u64::MAX - rng.below(0x2000),
        1 => 0xffff_ffff - rng.below(0x2000),
        2 => rng.below(0x20_0000),
        3 => 0xffff_8000_0000_0000 | (rng.next() & 0x7fff_ffff_ffff),
        _ => rng.next(),
    }
}

#[test]
fn fuzz_random_page_tables() {
    let seed = crate::seed();
    let walks: u64 = std::env::var("RVMX_FUZZ_INPUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    println!("walk fuzz: seed {seed} (RVMX_SEED={seed} reproduces), {walks} walks");
    let mut rng = Rng::new(seed);
    const PAGES: u64 = 8;
    let mut m = Mem::new(PAGES as usize);
    let (mut ok, mut faults, mut unhandled) = (0u64, 0u64, 0u64);
    for i in 0..walks {
        if i % 64 == 0 {
            for w in 0..(PAGES * 512) {
                m.set(w * 8, random_entry(&mut rng, PAGES));
            }
        }
        let mode = match rng.below(4) {
            0 => Mode::Off,
            1 => Mode::Bits32 { pse: rng.below(2) == 0 },
            2 => Mode::Pae { pdptes: [0; 4].map(|_: u64| random_entry(&mut rng, PAGES) & !0x1e6) },
            _ => Mode::Long,
        };
        let p = Paging {
            mode,
            cr3: rng.below(PAGES + 1) << 12 | (rng.next() & 0xfff),
            wp: rng.below(2) == 0,
            nxe: rng.below(2) == 0,
            smep: rng.below(2) == 0,
            smap: rng.below(2) == 0,
            maxphyaddr: rng.pick(&[36, 39, 46, 52]),
        };
        let acc = Access { write: rng.below(2) == 0, fetch: false, user: rng.below(2) == 0, ac: rng.below(2) == 0 };
        let acc = if rng.below(4) == 0 { Access { write: false, fetch: true, ..acc } } else { acc };
        let linear = random_linear(&mut rng);
        match translate(&mut m, &p, linear, acc) {
            Ok(gpa) => {
                ok += 1;
                assert_eq!(gpa & 0xfff, linear & 0xfff, "page offset kept: {p:?} {linear:#x}");
                if mode == Mode::Off {
                    assert_eq!(gpa, linear);
                }
                // Translating again finds the same page and changes nothing
                // (the accessed/dirty bits are already set).
                let before = m.bytes.clone();
                assert_eq!(translate(&mut m, &p, linear, acc), Ok(gpa), "{p:?} {linear:#x} {acc:?}");
                assert!(m.bytes == before, "a second walk wrote memory: {p:?} {linear:#x}");
                // What may write may read.
                if acc.write {
                    assert_eq!(translate(&mut m, &p, linear, Access { write: false, ..acc }), Ok(gpa));
                }
            }
            Err(WalkError::PageFault(code)) => {
                faults += 1;
                assert_eq!(code & pf::WRITE != 0, acc.write);
                assert_eq!(code & pf::USER != 0, acc.user);
                assert!(code & !0x1f == 0);
            }
            Err(WalkError::Unhandled) => unhandled += 1,
        }
    }
    println!("walk fuzz: {walks} walks: {ok} translated, {faults} page faults, {unhandled} given up");
}

/// Access rights of a present, usable, writable data segment (type 3),
/// expand-down (type 7) when asked, with the B bit when asked.
fn data_seg(limit: u32, expand_down: bool, big: bool) -> Segment {
    let t = if expand_down { 7 } else { 3 };
    Segment { limit, access_rights: t | (1 << 4) | (1 << 7) | (u32::from(big) << 14) }
}

#[test]
fn segment_limits() {
    let real = data_seg(0xffff, false, false);
    assert_eq!(segment_room(real, 0xffff, 0xfffe, 2, 1), Some(1));
    assert_eq!(segment_room(real, 0xffff, 0xffff, 2, 1), None, "a word at the limit crosses it");
    assert_eq!(segment_room(real, 0xffff, 0xfff0, 1, 100), Some(16), "a REP stops at the limit");
    let unusable = Segment { limit: 0xffff, access_rights: 1 << 16 };
    assert_eq!(segment_room(unusable, 0xffff, 0, 1, 1), None);
    let down = data_seg(0x0fff, true, false);
    assert_eq!(segment_room(down, 0xffff, 0x0fff, 1, 1), None, "expand-down: the limit itself is outside");
    assert_eq!(segment_room(down, 0xffff, 0x1000, 1, 1), Some(1));
    assert_eq!(segment_room(down, 0xffff, 0xff00, 1, 1000), Some(256), "expand-down, B=0: up to 0xffff");
    assert_eq!(segment_room(data_seg(0x0fff, true, true), 0xffff_ffff, 0xffff_fffc, 4, 9), Some(1));
    // Big real mode (a 4 GiB limit) with 16-bit addressing: the offset wraps
    // at 0xffff, so a word there crosses the address size.
    assert_eq!(segment_room(data_seg(0xffff_ffff, false, false), 0xffff, 0xffff, 2, 1), None);
    assert_eq!(segment_room(data_seg(0x10, false, false), 0xffff_ffff, 0x20, 1, 1), None);
}

#[test]
fn segment_limits_fuzz() {
    let seed = crate::seed();
    let n: u64 = std::env::var("RVMX_FUZZ_INPUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    println!("segment fuzz: seed {seed} (RVMX_SEED={seed} reproduces), {n} string accesses");
    let mut rng = Rng::new(seed);
    for _ in 0..n {
        let limit = match rng.below(4) {
            0 => 0xffff,
            1 => 0xffff_ffff,
            _ => rng.next() as u32 >> rng.below(32),
        };
        let seg = data_seg(limit, rng.below(3) == 0, rng.below(2) == 0);
        let mask: u64 = if rng.below(2) == 0 { 0xffff } else { 0xffff_ffff };
        let size = 1u64 << rng.below(3);
        let offset = rng.next() & mask;
        let count = 1 + rng.below(4096);
        // The reference: element by element, as the CPU checks each access.
        let ok = |i: u64| {
            let first = offset + i * size;
            let last = first + size - 1;
            let (low, high) = if seg.access_rights & 4 != 0 {
                (u64::from(limit) + 1, if seg.access_rights & (1 << 14) != 0 { 0xffff_ffff } else { 0xffff })
            } else {
                (0, u64::from(limit))
            };
            first >= low && last <= high.min(mask)
        };
        match segment_room(seg, mask, offset, size, count) {
            None => assert!(!ok(0), "{seg:?} {mask:#x} {offset:#x} {size}: refused, but the first element fits"),
            Some(k) => {
                assert!(k >= 1 && k <= count);
                assert!((0..k).all(ok), "{seg:?} {mask:#x} {offset:#x} {size} {count}: {k} allowed, one does not fit");
                assert!(k == count || !ok(k), "{seg:?} {mask:#x} {offset:#x} {size} {count}: only {k} allowed");
            }
        }
    }
    println!("segment fuzz: {n} string accesses, each checked against a per-element reference");
}

/// The segment types of SDM Vol. 3A table 3-1 ("Code- and Data-Segment
/// Types"), written out, against `walk::segment_type_allows`: every one of
/// the 16 types, for reads and writes, in protected and real mode, with
/// the accessed bit and the other access-rights bits both ways.
#[test]
fn segment_types() {
    // (type, name, readable by a data access, writable)
    const TYPES: [(u32, &str, bool, bool); 16] = [
        (0x0, "data read-only", true, false),
        (0x1, "data read-only, accessed", true, false),
        (0x2, "data read/write", true, true),
        (0x3, "data read/write, accessed", true, true),
        (0x4, "data read-only, expand-down", true, false),
        (0x5, "data read-only, expand-down, accessed", true, false),
        (0x6, "data read/write, expand-down", true, true),
        (0x7, "data read/write, expand-down, accessed", true, true),
        (0x8, "code execute-only", false, false),
        (0x9, "code execute-only, accessed", false, false),
        (0xa, "code execute/read", true, false),
        (0xb, "code execute/read, accessed", true, false),
        (0xc, "code execute-only, conforming", false, false),
        (0xd, "code execute-only, conforming, accessed", false, false),
        (0xe, "code execute/read, conforming", true, false),
        (0xf, "code execute/read, conforming, accessed", true, false),
    ];
    for (t, name, read, write) in TYPES {
        for other in [0u32, (1 << 4) | (1 << 7), (1 << 4) | (1 << 7) | (1 << 14) | (3 << 5)] {
            let ar = t | other;
            assert_eq!(walk::segment_type_allows(ar, false, false), read, "read through {name}");
            assert_eq!(walk::segment_type_allows(ar, true, false), write, "write through {name}");
            assert_eq!(walk::segment_type_allows(ar, false, true), read, "real mode: read through {name}");
            // KVM's emulator in real mode: a write needs only the type's
            // bit 1 (a readable code segment's cached type passes).
            assert_eq!(walk::segment_type_allows(ar, true, true), t & 2 != 0, "real mode: write through {name}");
        }
    }
    // The cases of string I/O: OUTS reads, INS writes.
    assert!(!walk::segment_type_allows(0x98, false, false), "OUTS from an execute-only CS");
    assert!(walk::segment_type_allows(0x9a, false, false), "OUTS from a readable CS");
    assert!(!walk::segment_type_allows(0x91, true, false), "INS into a read-only ES");
    assert!(!walk::segment_type_allows(0x9b, true, false), "INS into a code segment in ES");
    assert!(walk::segment_type_allows(0x93, true, false), "INS into a writable ES");
}
