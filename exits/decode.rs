// SPDX-License-Identifier: GPL-2.0

//! The x86 instruction decoder behind MMIO emulation (exits/mmio.rs): which
//! bytes make up the instruction that touched a device, how wide the access
//! is, and which register or immediate it moves.
//!
//! Pure logic, `core` only: built into rvmx.ko and, unchanged, into
//! `tests/unit` on the build machine, where it is fuzzed against the iced-x86
//! disassembler. The bytes are the guest's and hostile: they are re-read
//! from guest memory after the exit, so another vCPU or the VMM may have
//! rewritten them, and they need not be an instruction at all. They are
//! therefore read only through a [`Cursor`], which ends at the bytes given
//! or at 15 (the architectural limit), whichever is first: running out is
//! "undecodable" (`None`), never an out-of-bounds index.
//!
//! Decoded are the forms compilers use for device registers: MOV between a
//! register and memory (88, 89, 8A, 8B), MOV between AL/eAX and an absolute
//! address (A0-A3), MOV of an immediate to memory (C6 /0, C7 /0), and MOVZX
//! from memory (0F B6, 0F B7), with ModRM/SIB/displacement, the operand- and
//! address-size prefixes, segment overrides and REX. Anything else is
//! `None`, never a guess.

/// The longest x86 instruction, in bytes (SDM Vol. 2, §2.3.11).
pub(crate) const MAX_INSN_LEN: usize = 15;

/// The default operand and address size of the code segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CodeSize {
    /// Real mode, or CS.D = 0.
    Bits16,
    /// CS.D = 1.
    Bits32,
    /// 64-bit mode (IA-32e and CS.L = 1).
    Bits64,
}

/// A general-purpose register operand.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Reg {
    /// 0 = RAX ... 4 = RSP ... 15 = R15.
    pub(crate) num: u8,
    /// AH/CH/DH/BH: bits 15:8 of register `num` (0-3).
    pub(crate) high_byte: bool,
}

/// What the instruction does with the device.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// Writes the low `size` bytes of a register.
    StoreReg(Reg),
    /// Writes an immediate (already sign-extended where the CPU does).
    StoreImm(u64),
    /// Reads `size` bytes into a register, zero-extended to `dst_size`
    /// bytes (larger than `size` only for MOVZX).
    Load { reg: Reg, dst_size: u8 },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Insn {
    /// Length in bytes, 1..=15.
    pub(crate) len: u8,
    /// Bytes moved to or from the device: 1, 2, 4 or 8.
    pub(crate) size: u8,
    pub(crate) access: Access,
}

/// Reads instruction bytes front to back and can only fail.
// INVARIANT: `pos <= bytes.len() <= MAX_INSN_LEN`.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let n = bytes.len().min(MAX_INSN_LEN);
        Cursor { bytes: &bytes[..n], pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Skips `n` bytes (a displacement).
    fn skip(&mut self, n: usize) -> Option<()> {
        self.le(n).map(|_| ())
    }

    /// Reads an `n`-byte little-endian value, `n` <= 8.
    fn le(&mut self, n: usize) -> Option<u64> {
        let end = self.pos.checked_add(n)?;
        let b = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    }

    fn len(&self) -> u8 {
        // CAST: at most MAX_INSN_LEN (the invariant).
        self.pos as u8
    }
}

/// Decodes the instruction at the start of `bytes` (at most 15 of them are
/// looked at). See the module comment for what is decoded.
pub(crate) fn decode(bytes: &[u8], mode: CodeSize) -> Option<Insn> {
    let mut c = Cursor::new(bytes);
    let mut opsize: u8 = if mode == CodeSize::Bits16 { 2 } else { 4 };
    let mut addrsize: u8 = match mode {
        CodeSize::Bits16 => 2,
        CodeSize::Bits32 => 4,
        CodeSize::Bits64 => 8,
    };
    // Legacy prefixes, in any number (the cursor bounds them).
    loop {
        match c.peek()? {
            0x66 => opsize = if mode == CodeSize::Bits16 { 4 } else { 2 },
            0x67 => addrsize = if mode == CodeSize::Bits32 { 2 } else { 4 },
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        c.byte()?;
    }
    // REX, in 64-bit mode only, immediately before the opcode.
    let mut rex = 0u8;
    if mode == CodeSize::Bits64 && (0x40..=0x4f).contains(&c.peek()?) {
        rex = c.byte()?;
    }
    if rex & 8 != 0 {
        opsize = 8;
    }
    let rex_r = (rex >> 2) & 1;
    let mut op = c.byte()?;
    let two_byte = op == 0x0f;
    if two_byte {
        op = c.byte()?;
    }

    // MOV AL/eAX <-> moffs (A0-A3): no ModRM, an address-size offset.
    if !two_byte && (0xa0..=0xa3).contains(&op) {
        let size = if op & 1 == 0 { 1 } else { opsize };
        c.skip(usize::from(addrsize))?;
        let rax = Reg { num: 0, high_byte: false };
        let access = if op < 0xa2 { Access::Load { reg: rax, dst_size: size } } else { Access::StoreReg(rax) };
        return Some(Insn { len: c.len(), size, access });
    }

    // ModRM, then SIB and displacement; a register operand (mod = 3) is
    // not a memory access.
    let modrm = c.byte()?;
    let md = modrm >> 6;
    let rm = modrm & 7;
    let regf = ((modrm >> 3) & 7) | (rex_r << 3);
    if md == 3 {
        return None;
    }
    if addrsize == 2 {
        c.skip(match (md, rm) {
            (0, 6) | (2, _) => 2,
            (1, _) => 1,
            _ => 0,
        })?;
    } else {
        if rm == 4 {
            let sib = c.byte()?;
            if md == 0 && sib & 7 == 5 {
                c.skip(4)?;
            }
        }
        c.skip(match (md, rm) {
            (0, 5) | (2, _) => 4,
            (1, _) => 1,
            _ => 0,
        })?;
    }
    // An 8-bit register operand: AH..BH without REX, SPL..DIL with it.
    let byte_reg = |r: u8| -> Reg {
        if rex == 0 && (4..8).contains(&r) { Reg { num: r - 4, high_byte: true } } else { Reg { num: r, high_byte: false } }
    };
    let full_reg = Reg { num: regf, high_byte: false };
    let (size, access) = match (two_byte, op) {
        (false, 0x88) => (1, Access::StoreReg(byte_reg(regf))),
        (false, 0x89) => (opsize, Access::StoreReg(full_reg)),
        (false, 0x8a) => (1, Access::Load { reg: byte_reg(regf), dst_size: 1 }),
        (false, 0x8b) => (opsize, Access::Load { reg: full_reg, dst_size: opsize }),
        (false, 0xc6) if regf & 7 == 0 => (1, Access::StoreImm(c.le(1)?)),
        (false, 0xc7) if regf & 7 == 0 => {
            let imm = c.le(if opsize == 2 { 2 } else { 4 })?;
            // CAST: with REX.W, imm32 is sign-extended to 64 bits.
            let imm = if opsize == 8 { imm as u32 as i32 as i64 as u64 } else { imm };
            (opsize, Access::StoreImm(imm))
        }
        (true, 0xb6) => (1, Access::Load { reg: full_reg, dst_size: opsize }),
        (true, 0xb7) => (2, Access::Load { reg: full_reg, dst_size: opsize }),
        _ => return None,
    };
    Some(Insn { len: c.len(), size, access })
}
