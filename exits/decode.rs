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
//! `None`, never a guess. The memory operand is decoded too ([`Mem`]): with
//! the guest's registers and segment bases it gives the linear address the
//! access starts at, which the exit does not report when the access began
//! on the page before the device (exits/mmio.rs).

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
    pub(crate) mem: Mem,
}

/// The segment registers, numbered as in VMX's instruction information.
pub(crate) const ES: u8 = 0;
pub(crate) const CS: u8 = 1;
pub(crate) const SS: u8 = 2;
pub(crate) const DS: u8 = 3;
pub(crate) const FS: u8 = 4;
pub(crate) const GS: u8 = 5;

/// The memory operand: segment, and the effective address as base +
/// index * scale + displacement (SDM Vol. 2, §2.1.5), wrapped at the
/// address size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Mem {
    /// ES, CS, SS, DS, FS or GS (above): the override, or the default (SS
    /// for an rBP or rSP base, DS otherwise).
    pub(crate) seg: u8,
    /// Base and index register numbers (0 = rAX ... 15 = R15).
    pub(crate) base: Option<u8>,
    pub(crate) index: Option<u8>,
    /// 1, 2, 4 or 8.
    pub(crate) scale: u8,
    /// The displacement, sign-extended (the address itself for moffs).
    pub(crate) disp: u64,
    /// Relative to the next instruction (64-bit mode, ModRM mod 0 r/m 5).
    pub(crate) rip_relative: bool,
    /// Address size in bytes, 2, 4 or 8: the effective address wraps there.
    pub(crate) addr_size: u8,
}

impl Mem {
    /// The effective address, with `reg(n)` the value of register `n` and
    /// `rip` the address of the instruction `len` bytes long.
    pub(crate) fn effective_address(&self, reg: impl Fn(u8) -> u64, rip: u64, len: u8) -> u64 {
        let mut ea = self.disp;
        if let Some(b) = self.base {
            ea = ea.wrapping_add(reg(b));
        }
        if let Some(i) = self.index {
            ea = ea.wrapping_add(reg(i).wrapping_mul(u64::from(self.scale)));
        }
        if self.rip_relative {
            ea = ea.wrapping_add(rip.wrapping_add(u64::from(len)));
        }
        match self.addr_size {
            2 => ea & 0xffff,
            4 => ea & 0xffff_ffff,
            _ => ea,
        }
    }
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
    // Legacy prefixes, in any number (the cursor bounds them); of several
    // segment overrides the last counts.
    let mut seg_override = None;
    loop {
        match c.peek()? {
            0x66 => opsize = if mode == CodeSize::Bits16 { 4 } else { 2 },
            0x67 => addrsize = if mode == CodeSize::Bits32 { 2 } else { 4 },
            // In 64-bit mode these four are ignored (their bases are 0).
            0x26 | 0x2e | 0x36 | 0x3e if mode == CodeSize::Bits64 => {}
            0x26 => seg_override = Some(ES),
            0x2e => seg_override = Some(CS),
            0x36 => seg_override = Some(SS),
            0x3e => seg_override = Some(DS),
            0x64 => seg_override = Some(FS),
            0x65 => seg_override = Some(GS),
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
    let rex_x = (rex >> 1) & 1;
    let rex_b = rex & 1;
    let mut mem = Mem { seg: DS, base: None, index: None, scale: 1, disp: 0, rip_relative: false, addr_size: addrsize };
    let mut op = c.byte()?;
    let two_byte = op == 0x0f;
    if two_byte {
        op = c.byte()?;
    }

    // MOV AL/eAX <-> moffs (A0-A3): no ModRM, an address-size offset.
    if !two_byte && (0xa0..=0xa3).contains(&op) {
        let size = if op & 1 == 0 { 1 } else { opsize };
        mem.disp = c.le(usize::from(addrsize))?;
        mem.seg = seg_override.unwrap_or(DS);
        let rax = Reg { num: 0, high_byte: false };
        let access = if op < 0xa2 { Access::Load { reg: rax, dst_size: size } } else { Access::StoreReg(rax) };
        return Some(Insn { len: c.len(), size, access, mem });
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
    // Register numbers: 0 rAX, 1 rCX, 2 rDX, 3 rBX, 4 rSP, 5 rBP, 6 rSI, 7 rDI.
    let stack_base;
    if addrsize == 2 {
        // The 16-bit forms (SDM Vol. 2, table 2-1).
        let (base, index) = match rm {
            0 => (Some(3), Some(6)),
            1 => (Some(3), Some(7)),
            2 => (Some(5), Some(6)),
            3 => (Some(5), Some(7)),
            4 => (Some(6), None),
            5 => (Some(7), None),
            6 if md == 0 => (None, None),
            6 => (Some(5), None),
            _ => (Some(3), None),
        };
        (mem.base, mem.index) = (base, index);
        stack_base = base == Some(5);
        mem.disp = match (md, rm) {
            // CAST: sign-extension of the displacement.
            (0, 6) | (2, _) => c.le(2)? as u16 as i16 as i64 as u64,
            (1, _) => c.le(1)? as u8 as i8 as i64 as u64,
            _ => 0,
        };
    } else {
        let mut disp32 = md == 2;
        if rm == 4 {
            let sib = c.byte()?;
            mem.scale = 1 << (sib >> 6);
            let index = ((sib >> 3) & 7) | (rex_x << 3);
            mem.index = (index != 4).then_some(index);
            if md == 0 && sib & 7 == 5 {
                disp32 = true;
            } else {
                mem.base = Some((sib & 7) | (rex_b << 3));
            }
        } else if md == 0 && rm == 5 {
            disp32 = true;
            mem.rip_relative = mode == CodeSize::Bits64;
        } else {
            mem.base = Some(rm | (rex_b << 3));
        }
        stack_base = matches!(mem.base, Some(4) | Some(5));
        mem.disp = if disp32 {
            // CAST: sign-extension of the displacement.
            c.le(4)? as u32 as i32 as i64 as u64
        } else if md == 1 {
            c.le(1)? as u8 as i8 as i64 as u64
        } else {
            0
        };
    }
    mem.seg = seg_override.unwrap_or(if stack_base { SS } else { DS });
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
    Some(Insn { len: c.len(), size, access, mem })
}
