//! Tests of vmcs/checks.rs: states rvmx really enters with pass; each rule
//! is named when one field breaks it; a seeded fuzz run of random VMCS
//! contents never panics (overflow checks are on for this crate) and
//! always names a rule that the state really breaks.

use crate::checks::*;
use crate::Rng;
use std::println;

/// Bochs 2.7's capability MSRs, as rvmx's load line reports them.
fn cpu() -> Cpu {
    Cpu {
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x0037_27ff,
        maxphyaddr: 40,
        linear_bits: 48,
        pin: (0x16, 0x7f),
        proc: (0x0401_e172, 0xffff_fffe),
        proc2: (0, 0x0077_ffff),
        exit: (0x0003_6dff, 0x01ff_ffff),
        entry: (0x11ff, 0x0003_ffff),
        ept_vpid: 1 << 6 | 1 << 8 | 1 << 14 | 1 << 16 | 1 << 20 | 1 << 21 | 1 << 25 | 1 << 26 | 1 << 32 | 1 << 41,
        misc: 0x1c0 | (1 << 30),
    }
}

fn controls() -> Controls {
    Controls {
        pin: 0x16 | 0x1 | 0x8 | 0x20,
        proc: 0x0401_e172 | (1 << 7) | (1 << 28) | (1 << 31),
        proc2: 0x2 | 0x20 | 0x80,
        exit: 0x0003_6dff | (1 << 9) | (1 << 21),
        entry: 0x11ff | (1 << 9) | (1 << 14) | (1 << 15),
        msr_bitmap: 0x1234_5000,
        ept_pointer: 0x5_6789_a000 | 6 | (3 << 3),
        vpid: 1,
        ..Default::default()
    }
}

fn seg(selector: u16, ar: u32) -> Segment {
    Segment { selector, base: 0, limit: 0xffff_ffff, ar }
}

/// A 64-bit guest as rvmx's long-mode set-up leaves it.
fn long_mode() -> Guest {
    let mut g = Guest {
        cr0: 0x8005_0033,
        cr3: 0x9000,
        cr4: 0x2020,
        efer: 0x500,
        pat: 0x0007_0406_0007_0406,
        rip: 0xffff_8000_0000_1000,
        rflags: 2,
        gdtr_limit: 0x27,
        idtr_limit: 0xfff,
        link_pointer: u64::MAX,
        ..Default::default()
    };
    let data = seg(0x10, 0xc093);
    g.seg = [data, seg(0x8, 0xa09b), data, data, data, data, Segment { ar: 0x1_0000, ..Default::default() }, Segment { selector: 0x18, base: 0, limit: 0x67, ar: 0x8b }];
    g
}

/// The reset state (real mode, unrestricted guest).
fn reset() -> Guest {
    let rm = |sel: u16| Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xffff, ar: 0x93 };
    let mut g = Guest { cr0: 0x30, cr4: 0x2000, rip: 0xfff0, rflags: 2, gdtr_limit: 0xffff, idtr_limit: 0xffff, link_pointer: u64::MAX, ..Default::default() };
    g.seg = [rm(0), Segment { selector: 0xf000, base: 0xffff_0000, limit: 0xffff, ar: 0x9b }, rm(0), rm(0), rm(0), rm(0), Segment { limit: 0xffff, ar: 0x82, ..Default::default() }, Segment { limit: 0xffff, ar: 0x8b, ..Default::default() }];
    g
}

fn real_controls() -> Controls {
    let mut c = controls();
    c.entry &= !(1 << 9);
    c
}

#[test]
fn real_states_pass() {
    assert_eq!(check_guest(&long_mode(), &controls(), &cpu()), None);
    assert_eq!(check_guest(&reset(), &real_controls(), &cpu()), None);
    assert_eq!(check_controls(&controls(), &cpu(), long_mode().cr0), None);
}

fn broken(f: impl Fn(&mut Guest, &mut Controls)) -> Option<Violation> {
    let (mut g, mut c) = (long_mode(), controls());
    f(&mut g, &mut c);
    check_controls(&c, &cpu(), g.cr0).or_else(|| check_guest(&g, &c, &cpu()))
}

#[track_caller]
fn named(f: impl Fn(&mut Guest, &mut Controls)) -> (Check, Option<Seg>) {
    let v = broken(f).expect("a broken state passed the checks");
    (v.check, v.segment)
}

#[test]
fn each_rule_is_named() {
    use Check::*;
    const CS: usize = 1;
    const SS: usize = 2;
    const DS: usize = 3;
    const TR: usize = 7;
    assert_eq!(named(|g, _| g.cr0 &= !0x20), (Cr0Fixed, None));
    assert_eq!(named(|g, _| g.cr4 &= !0x2000), (Cr4Fixed, None));
    assert_eq!(named(|g, _| g.cr4 &= !0x20), (Cr4PaeForLongMode, None));
    assert_eq!(named(|g, _| g.cr3 = 1 << 45), (Cr3Width, None));
    assert_eq!(named(|g, _| g.efer = 0x100), (EferLma, None));
    assert_eq!(named(|g, _| g.efer = 0x400), (EferLme, None));
    assert_eq!(named(|g, _| g.efer |= 1 << 2), (EferReserved, None));
    assert_eq!(named(|g, _| g.pat = 2), (PatValid, None));
    assert_eq!(named(|g, _| g.sysenter_eip = 1 << 50), (SysenterCanonical, None));
    assert_eq!(named(|g, _| g.seg[CS].ar = 0xa091), (CsType, Some(Seg::Cs)));
    assert_eq!(named(|g, _| g.seg[CS].ar = 0xa0fb), (CsDplNonConforming, Some(Seg::Cs)));
    assert_eq!(named(|g, _| g.seg[CS].ar = 0xe09b), (CsLongAndDb, Some(Seg::Cs)));
    assert_eq!(named(|g, _| g.seg[SS].ar = 0xc09b), (SsType, Some(Seg::Ss)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc092), (DataAccessed, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc09a), (DataAccessed, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc099), (CodeReadable, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc083), (SegS, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc013), (SegPresent, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0xc193), (SegReserved, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].ar = 0x4093), (Granularity, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[DS].base = 1 << 32), (BaseHigh, Some(Seg::Ds)));
    assert_eq!(named(|g, _| g.seg[5].base = 1 << 60), (BaseCanonical, Some(Seg::Gs)));
    assert_eq!(named(|g, _| g.seg[TR].ar = 0x89), (TrType, Some(Seg::Tr)));
    assert_eq!(named(|g, _| g.seg[TR].ar = 0x83), (TrType, Some(Seg::Tr)));
    assert_eq!(named(|g, _| g.seg[TR].ar = 0x1_008b), (TrUnusable, Some(Seg::Tr)));
    assert_eq!(named(|g, _| g.seg[TR].selector = 0x1c), (TrTi, Some(Seg::Tr)));
    assert_eq!(named(|g, _| g.seg[6].ar = 0x83), (LdtrType, Some(Seg::Ldtr)));
    assert_eq!(named(|g, _| g.gdtr_base = 0x8000_0000_0000), (TableCanonical, None));
    assert_eq!(named(|g, _| g.idtr_limit = 0x1_0000), (TableLimit, None));
    assert_eq!(named(|g, _| g.rip = 0x8000_0000_0000), (RipCanonical, None));
    assert_eq!(named(|g, _| { g.seg[CS].ar = 0xc09b; }), (RipHigh, None));
    assert_eq!(named(|g, _| g.rflags = 0), (RflagsReserved, None));
    assert_eq!(named(|g, _| g.rflags = 2 | 1 << 15), (RflagsReserved, None));
    assert_eq!(named(|g, _| g.rflags = 2 | 1 << 17), (V86Segment, Some(Seg::Cs)));
    assert_eq!(named(|g, _| g.activity = 4), (ActivityState, None));
    assert_eq!(named(|g, _| { g.activity = 1; g.seg[SS].ar = 0xc0f3; g.seg[CS].ar = 0xa0fb }), (HltWithSsDpl, None));
    assert_eq!(named(|g, _| { g.activity = 1; g.interruptibility = 2 }), (ActivityWithBlocking, None));
    assert_eq!(named(|g, _| g.interruptibility = 3), (StiAndMovSs, None));
    assert_eq!(named(|g, _| g.interruptibility = 1), (StiWithoutIf, None));
    assert_eq!(named(|g, _| g.interruptibility = 1 << 5), (InterruptibilityReserved, None));
    assert_eq!(named(|g, _| g.interruptibility = 4), (SmiBlocking, None));
    assert_eq!(named(|g, _| { g.rflags |= 1 << 8 | 1 << 9; g.interruptibility = 1 }), (PendingDbgBs, None));
    assert_eq!(named(|g, _| g.pending_dbg = 1 << 4), (PendingDbgReserved, None));
    assert_eq!(named(|g, _| g.link_pointer = 0), (LinkPointer, None));
    assert_eq!(named(|g, _| g.dr7 = 1 << 40), (Dr7High, None));
    // Bochs offers no CET: CR4.CET breaks the fixed bits first; on a CPU
    // with CET it needs CR0.WP.
    assert_eq!(named(|g, _| g.cr4 |= 1 << 23), (Cr4Fixed, None));
    let mut cet = cpu();
    cet.cr4_fixed1 |= 1 << 23;
    let mut g = long_mode();
    g.cr4 |= 1 << 23;
    g.cr0 &= !(1 << 16);
    assert_eq!(check_guest(&g, &controls(), &cet).map(|v| v.check), Some(CetNeedsWp));
    // Event injection (§27.2.1.3) and its guest-state rules.
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_0100), (EventType, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_0203), (EventVector, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_0320), (EventVector, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_030d), (EventErrorCode, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_0b06), (EventErrorCode, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_1020), (EventReserved, None));
    assert_eq!(named(|_, c| { c.entry_intr_info = 0x8000_0b0d; c.entry_error_code = 0x1_0000 }), (EventErrorCodeBits, None));
    assert_eq!(named(|_, c| { c.entry_intr_info = 0x8000_0480; c.entry_instruction_len = 16 }), (EventLength, None));
    assert_eq!(named(|_, c| c.entry_intr_info = 0x8000_0020), (RflagsIfForInterrupt, None));
    assert_eq!(named(|g, c| { g.rflags |= 1 << 9; g.interruptibility = 1; c.entry_intr_info = 0x8000_0020 }), (BlockingForInterrupt, None));
    assert_eq!(named(|g, c| { g.interruptibility = 2; c.entry_intr_info = 0x8000_0202 }), (BlockingForNmi, None));
    assert_eq!(named(|g, c| { g.interruptibility = 8; c.entry_intr_info = 0x8000_0202 }), (NmiBlockingForNmi, None));
    assert_eq!(named(|g, c| { g.activity = 3; c.entry_intr_info = 0x8000_0202 }), (ActivityForEvent, None));
    // Controls (§27.2.1.1).
    assert_eq!(named(|_, c| c.pin &= !0x2), (PinControls, None));
    assert_eq!(named(|_, c| c.cr3_target_count = 5), (Cr3TargetCount, None));
    assert_eq!(named(|_, c| c.msr_bitmap |= 8), (MsrBitmapAddress, None));
    assert_eq!(named(|_, c| c.pin &= !0x8), (NmiControls, None));
    assert_eq!(named(|_, c| c.ept_pointer |= 1 << 7), (EptPointer, None));
    assert_eq!(named(|_, c| c.ept_pointer &= !(7 << 3)), (EptPointer, None));
    assert_eq!(named(|_, c| c.vpid = 0), (VpidZero, None));
    assert_eq!(named(|_, c| c.proc2 = 0x80), (UnrestrictedNeedsEpt, None));
}

#[test]
fn real_mode_rules() {
    use Check::*;
    let r = |f: &dyn Fn(&mut Guest)| {
        let mut g = reset();
        f(&mut g);
        check_guest(&g, &real_controls(), &cpu()).map(|v| (v.check, v.segment))
    };
    assert_eq!(r(&|g| { g.seg[1].ar = 0x93; g.seg[2].ar = 0xb3 }), Some((SsDplRealMode, Some(Seg::Ss))));
    assert_eq!(r(&|g| g.cr0 = 0x8000_0030), Some((Cr0PgWithoutPe, None)));
    assert_eq!(r(&|g| g.rip = 1 << 32), Some((RipHigh, None)));
    assert_eq!(r(&|g| g.cr4 = 0x2000 | 1 << 17), Some((Cr4PcideOutsideLongMode, None)));
    // PAE paging: a present PDPTE with reserved bits.
    assert_eq!(r(&|g| { g.cr0 = 0x8000_0031; g.cr4 = 0x2020; g.pdpte[2] = 0x1000 | 1 | 1 << 5 }), Some((Pdpte, None)));
    // A data-segment CS (type 3) in real mode is allowed only with DPL 0.
    assert_eq!(r(&|g| g.seg[1].ar = 0x93), None);
    assert_eq!(r(&|g| g.seg[1].ar = 0xb3), Some((CsDplData, Some(Seg::Cs))));
    // Virtual-8086 mode.
    let v86 = |f: &dyn Fn(&mut Guest)| {
        let mut g = reset();
        g.cr0 |= 1;
        g.rflags |= 1 << 17;
        for s in 0..6 {
            g.seg[s] = Segment { selector: 0x100, base: 0x1000, limit: 0xffff, ar: 0xf3 };
        }
        f(&mut g);
        check_guest(&g, &real_controls(), &cpu()).map(|v| (v.check, v.segment))
    };
    assert_eq!(v86(&|_| {}), None);
    assert_eq!(v86(&|g| g.seg[3].base = 0x2000), Some((V86Segment, Some(Seg::Ds))));
    assert_eq!(v86(&|g| g.cr0 &= !1), Some((RflagsVm, None)));
}

/// Bochs 2.7's own rule (CS.RPL against CS.DPL) is named only when no SDM
/// rule is broken: real mode code at CS = 0xf001 is valid guest state.
#[test]
fn emulator_rule_only_when_the_sdm_has_none() {
    let h = Host::default();
    let mut g = reset();
    g.seg[1].selector = 0xf001;
    g.seg[1].base = 0xf0010;
    assert_eq!(check_guest(&g, &real_controls(), &cpu()), None);
    let v = explain(Failure::GuestState, &g, &h, &real_controls(), &cpu());
    assert_eq!(v.map(|v| (v.check, v.segment, v.value)), Some((Check::Bochs27CsRpl, Some(Seg::Cs), 0xf001)));
    // A broken SDM rule is named first.
    g.rflags = 0;
    assert_eq!(explain(Failure::GuestState, &g, &h, &real_controls(), &cpu()).map(|v| v.check), Some(Check::RflagsReserved));
    // A conforming CS may have RPL above DPL.
    let mut g = reset();
    g.seg[1].ar = 0x9f;
    g.seg[1].selector = 0xf003;
    g.seg[1].base = 0xf0030;
    assert_eq!(explain(Failure::GuestState, &g, &h, &real_controls(), &cpu()), None);
}

#[test]
fn every_check_has_words_and_a_unique_number() {
    for (i, c) in Check::ALL.iter().enumerate() {
        assert_eq!(Check::from_number(*c as u16), Some(*c));
        assert!(!c.rule().is_empty() && (c.section().starts_with("27.") || (*c as u16) >= 900));
        assert!(Check::ALL[..i].iter().all(|d| *d as u16 != *c as u16));
    }
    for s in Seg::ALL {
        assert_eq!(Seg::from_number(s as u8), Some(s));
    }
}

/// Random VMCS contents near the valid states: one to three fields set to
/// values a hostile VMM or guest could produce. Every check must return
/// without panicking (no overflow, no out-of-bounds index: this crate is
/// built with overflow checks), every number named must be a known rule,
/// and the run must reach most of the rules.
#[test]
fn fuzz_checks() {
    let seed = crate::seed();
    println!("checks fuzz: seed {seed} (RVMX_SEED={seed} to repeat)");
    let mut rng = Rng::new(seed);
    let mut named = [0u32; 1000];
    const N: u32 = 1_000_000;
    for _ in 0..N {
        let long = rng.below(2) == 0;
        let (mut g, mut c) = if long { (long_mode(), controls()) } else { (reset(), real_controls()) };
        let interesting = [0u64, 1, 2, 3, 0xffff, 0xffff_ffff, 1 << 32, 1 << 47, 0x8000_0000_0000, u64::MAX, u64::MAX - 1];
        let val = |rng: &mut Rng| if rng.below(2) == 0 { rng.pick(&interesting) } else { rng.next() >> rng.below(64) };
        for _ in 0..rng.below(3) + 1 {
            // CAST (here and below): fuzz values truncated on purpose.
            match rng.below(22) {
                0 => g.cr0 ^= 1 << rng.below(64),
                1 => g.cr4 ^= 1 << rng.below(64),
                2 => g.cr3 = val(&mut rng),
                3 => g.efer ^= 1 << rng.below(64),
                4 => g.rflags ^= 1 << rng.below(64),
                5 => g.rip = val(&mut rng),
                6 => {
                    let s = rng.below(8) as usize;
                    g.seg[s].ar ^= 1 << rng.below(32);
                }
                7 => {
                    let s = rng.below(8) as usize;
                    g.seg[s].base = val(&mut rng);
                }
                8 => {
                    let s = rng.below(8) as usize;
                    g.seg[s].limit = val(&mut rng) as u32;
                }
                9 => {
                    let s = rng.below(8) as usize;
                    g.seg[s].selector = val(&mut rng) as u16;
                }
                10 => g.interruptibility = val(&mut rng) as u32,
                11 => g.activity = val(&mut rng) as u32,
                12 => g.pending_dbg = val(&mut rng),
                13 => g.pat = val(&mut rng),
                14 => c.entry_intr_info = (1 << 31) | val(&mut rng) as u32,
                15 => c.entry_error_code = val(&mut rng) as u32,
                16 => c.entry_instruction_len = val(&mut rng) as u32,
                17 => g.pdpte[rng.below(4) as usize] = val(&mut rng),
                18 => g.gdtr_base = val(&mut rng),
                19 => g.idtr_limit = val(&mut rng) as u32,
                20 => g.link_pointer = val(&mut rng),
                _ => c.ept_pointer = val(&mut rng),
            }
        }
        let h = Host::default();
        let v = explain(Failure::Control, &g, &h, &c, &cpu()).or_else(|| explain(Failure::GuestState, &g, &h, &c, &cpu()));
        if let Some(v) = v {
            named[v.check as usize] += 1;
            assert!(Check::from_number(v.check as u16).is_some());
        }
    }
    let distinct = named.iter().filter(|n| **n > 0).count();
    println!("checks fuzz: {N} random VMCS states checked, {distinct} different rules named");
    assert!(distinct >= 40, "the fuzz reached only {distinct} rules");
}
