//! Tests of exits/decode.rs: known encodings, hostile byte strings, and a
//! seeded fuzz run checked against the iced-x86 disassembler.

use crate::decode::{decode, Access, CodeSize, Reg};
use crate::Rng;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use std::println;
use std::vec::Vec;

const B16: CodeSize = CodeSize::Bits16;
const B32: CodeSize = CodeSize::Bits32;
const B64: CodeSize = CodeSize::Bits64;

fn r(num: u8) -> Reg {
    Reg { num, high_byte: false }
}

fn insn(len: u8, size: u8, access: Access) -> Option<(u8, u8, Access)> {
    Some((len, size, access))
}

/// What `decode` says of length, size and access (the memory operand is
/// checked against iced-x86 below).
fn dec(b: &[u8], mode: CodeSize) -> Option<(u8, u8, Access)> {
    decode(b, mode).map(|i| (i.len, i.size, i.access))
}

#[test]
fn known_encodings() {
    // mov [rax], ecx / rcx / ah / spl
    assert_eq!(dec(&[0x89, 0x08], B64), insn(2, 4, Access::StoreReg(r(1))));
    assert_eq!(dec(&[0x48, 0x89, 0x08], B64), insn(3, 8, Access::StoreReg(r(1))));
    assert_eq!(dec(&[0x88, 0x20], B64), insn(2, 1, Access::StoreReg(Reg { num: 0, high_byte: true })));
    assert_eq!(dec(&[0x40, 0x88, 0x20], B64), insn(3, 1, Access::StoreReg(r(4))));
    // mov r9d, [rip + 0x1000]
    assert_eq!(dec(&[0x44, 0x8b, 0x0d, 0, 0x10, 0, 0], B64), insn(7, 4, Access::Load { reg: r(9), dst_size: 4 }));
    // mov dword [rax], 0x12345678; mov qword [rax], -1
    assert_eq!(dec(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12], B64), insn(6, 4, Access::StoreImm(0x1234_5678)));
    assert_eq!(dec(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], B64), insn(7, 8, Access::StoreImm(u64::MAX)));
    // mov byte [bx + si], 0x5a (16-bit)
    assert_eq!(dec(&[0xc6, 0x00, 0x5a], B16), insn(3, 1, Access::StoreImm(0x5a)));
    // mov eax, [0xfee00020]; in 64-bit mode an 8-byte moffs
    assert_eq!(dec(&[0xa1, 0x20, 0, 0xe0, 0xfe], B32), insn(5, 4, Access::Load { reg: r(0), dst_size: 4 }));
    assert_eq!(dec(&[0x48, 0xa3, 1, 2, 3, 4, 5, 6, 7, 8], B64), insn(10, 8, Access::StoreReg(r(0))));
    // movzx eax, byte [rcx]; movzx ax, word? (0x66 0f b7: dst 2)
    assert_eq!(dec(&[0x0f, 0xb6, 0x01], B64), insn(3, 1, Access::Load { reg: r(0), dst_size: 4 }));
    assert_eq!(dec(&[0x66, 0x0f, 0xb7, 0x01], B32), insn(4, 2, Access::Load { reg: r(0), dst_size: 2 }));
    // mov ax, [bx + 2] (16-bit); with 0x67, [eax + ecx*4 + 0x10]
    assert_eq!(dec(&[0x8b, 0x47, 0x02], B16), insn(3, 2, Access::Load { reg: r(0), dst_size: 2 }));
    assert_eq!(dec(&[0x67, 0x8b, 0x44, 0x88, 0x10], B16), insn(5, 2, Access::Load { reg: r(0), dst_size: 2 }));
    // A register operand is not a memory access.
    assert_eq!(decode(&[0x89, 0xc8], B64), None);
}

#[test]
fn hostile_bytes_are_undecodable_not_a_crash() {
    // The review's case: 13 prefixes, REX, 0F: the opcode byte would be
    // byte 15 of a 15-byte buffer.
    let mut b = [0x66u8; 15];
    b[13] = 0x48;
    b[14] = 0x0f;
    assert_eq!(decode(&b, B64), None);
    // 14 prefixes then MOV: the ModRM would be byte 16.
    let mut b = [0x3eu8; 15];
    b[14] = 0x89;
    assert_eq!(decode(&b, B64), None);
    // Longer than 15 bytes in all: never decoded past 15.
    let mut b = [0x26u8; 40];
    b[20] = 0x89;
    b[21] = 0x00;
    assert_eq!(decode(&b, B32), None);
    // Truncated instructions and an empty buffer.
    for cut in 0..6 {
        assert_eq!(decode(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12][..cut], B64), None);
    }
    assert_eq!(decode(&[], B16), None);
    // A displacement that ends exactly at byte 15 is fine.
    let mut b = [0x2eu8; 15];
    b[8..15].copy_from_slice(&[0x8b, 0x84, 0x24, 1, 2, 3, 4]);
    assert_eq!(dec(&b, B64), insn(15, 4, Access::Load { reg: r(0), dst_size: 4 }));
}

/// Bytes that are likely to form instructions the decoder knows, mixed
/// with random ones.
fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    const PREFIXES: &[u8] = &[0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf2, 0xf3];
    const OPS: &[u8] = &[0x88, 0x89, 0x8a, 0x8b, 0xa0, 0xa1, 0xa2, 0xa3, 0xc6, 0xc7, 0x0f];
    let len = rng.below(22) as usize;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let b = match rng.below(10) {
            0..=1 => rng.pick(PREFIXES),
            2 => 0x40 | rng.below(16) as u8,
            3..=4 => rng.pick(OPS),
            5 => rng.pick(&[0xb6, 0xb7]),
            _ => rng.next() as u8,
        };
        v.push(b);
    }
    v
}

/// rvmx's view of an iced register: (number, high byte, size in bytes).
fn reg_of(r: Register) -> (u8, bool, u8) {
    let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    (r.full_register().number() as u8, high, r.size() as u8)
}

/// Whether `b` starts with only the prefixes rvmx decodes, then an opcode
/// it decodes (so that iced's MOV/MOVZX must be decoded by rvmx too).
fn in_decoded_subset(b: &[u8], mode: CodeSize) -> bool {
    let mut i = 0;
    while i < b.len() && [0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65].contains(&b[i]) {
        i += 1;
    }
    if mode == B64 && i < b.len() && (0x40..=0x4f).contains(&b[i]) {
        i += 1;
    }
    match b.get(i) {
        Some(0x88..=0x8b) | Some(0xa0..=0xa3) | Some(0xc6) | Some(0xc7) => true,
        Some(0x0f) => matches!(b.get(i + 1), Some(0xb6) | Some(0xb7)),
        _ => false,
    }
}

fn check_against_iced(b: &[u8], mode: CodeSize) {
    let bitness = match mode {
        B16 => 16,
        B32 => 32,
        B64 => 64,
    };
    let ours = decode(b, mode);
    let window = &b[..b.len().min(15)];
    // An instruction address near the top, so that RIP-relative and 16-bit
    // wrap-around are exercised.
    let rip: u64 = match mode {
        B16 => 0xfff8,
        B32 => 0xffff_fff8,
        B64 => 0xffff_ffff_ffff_fff8,
    };
    let mut dec = Decoder::with_ip(bitness, window, rip, DecoderOptions::NONE);
    let ins: Instruction = dec.decode();
    let valid = !ins.is_invalid();
    let mem_op = (0..ins.op_count()).find(|&k| ins.op_kind(k) == OpKind::Memory);
    let is_mov = matches!(ins.mnemonic(), Mnemonic::Mov | Mnemonic::Movzx);
    let ctx = || std::format!("bytes {:02x?} mode {:?}: rvmx {:?}, iced {:?} len {}", b, mode, ours, ins.code(), ins.len());

    if let Some(d) = ours {
        assert!(valid && is_mov, "{}", ctx());
        assert_eq!(usize::from(d.len), ins.len(), "length: {}", ctx());
        let k = mem_op.unwrap_or_else(|| panic!("no memory operand: {}", ctx()));
        assert_eq!(ins.memory_size().size(), usize::from(d.size), "size: {}", ctx());
        // The effective address, for registers with recognisable values
        // (register n holds 0x1111_1111_1111_1111 * (n + 1) rotated by n),
        // and the segment, against iced's virtual address with every
        // segment base 0 but the one iced names (checked by name).
        let regv = |n: u8| (0x1111_1111_1111_1111u64.wrapping_mul(u64::from(n) + 1)).rotate_left(u32::from(n) * 7);
        let ea = d.mem.effective_address(regv, rip, d.len);
        let iced_ea = ins.virtual_address(k, 0, |r, _, _| {
            if r.is_segment_register() {
                return Some(0);
            }
            let n = r.full_register().number() as u8;
            let v = regv(n);
            Some(match r.size() {
                2 => v & 0xffff,
                4 => v & 0xffff_ffff,
                _ => v,
            })
        });
        assert_eq!(Some(ea), iced_ea, "effective address: {} ({:?})", ctx(), d.mem);
        let seg = match ins.memory_segment() {
            Register::ES => 0,
            Register::CS => 1,
            Register::SS => 2,
            Register::DS => 3,
            Register::FS => 4,
            _ => 5,
        };
        // In 64-bit mode ES, CS, SS and DS all have base 0: only FS and GS
        // tell (iced names an ignored override, rvmx the default).
        let flat = |s: u8| if mode == B64 && s != 4 && s != 5 { 3 } else { s };
        assert_eq!(flat(d.mem.seg), flat(seg), "segment: {} ({:?})", ctx(), d.mem);
        match d.access {
            Access::StoreReg(r) => {
                assert_eq!(k, 0, "{}", ctx());
                let (n, hi, sz) = reg_of(ins.op1_register());
                assert_eq!((n, hi, sz), (r.num, r.high_byte, d.size), "{}", ctx());
            }
            Access::StoreImm(v) => {
                assert_eq!(k, 0, "{}", ctx());
                assert_eq!(ins.immediate(1), v, "{}", ctx());
            }
            Access::Load { reg, dst_size } => {
                assert_eq!(k, 1, "{}", ctx());
                let (n, hi, sz) = reg_of(ins.op0_register());
                assert_eq!((n, hi, sz), (reg.num, reg.high_byte, dst_size), "{}", ctx());
            }
        }
    } else if valid && is_mov && mem_op.is_some() && in_decoded_subset(window, mode) {
        panic!("rvmx did not decode an instruction it should: {}", ctx());
    }
}

#[test]
fn fuzz_against_iced() {
    let seed = crate::seed();
    let inputs: u64 = std::env::var("RVMX_FUZZ_INPUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    println!("decode fuzz: seed {seed} (RVMX_SEED={seed} reproduces), {inputs} inputs");
    let mut rng = Rng::new(seed);
    let mut decoded = 0u64;
    for _ in 0..inputs {
        let b = random_bytes(&mut rng);
        let mode = rng.pick(&[B16, B32, B64]);
        if decode(&b, mode).is_some() {
            decoded += 1;
        }
        check_against_iced(&b, mode);
    }
    println!("decode fuzz: {inputs} inputs, {decoded} decoded as MMIO instructions, all agreeing with iced-x86");
}
