// SPDX-License-Identifier: GPL-2.0

//! MMIO: a guest access to a guest-physical address with no memory slot
//! (or a write to a read-only slot) is a device access, which userspace
//! emulates (KVM_EXIT_MMIO: address, length, data, direction).
//!
//! An EPT violation tells the address but not the data or the register: for
//! that rvmx reads the faulting instruction from guest memory (translating
//! RIP through the guest's own page tables) and decodes it. Decoded are the
//! forms compilers use for device registers: MOV between a register and
//! memory (88, 89, 8A, 8B), MOV between AL/eAX and an absolute address (A0-
//! A3), MOV of an immediate to memory (C6, C7), and MOVZX from memory
//! (0F B6, 0F B7), with ModRM/SIB/displacement, the
//! operand- and address-size prefixes, segment overrides and REX. Anything
//! else is KVM_EXIT_INTERNAL_ERROR (emulation), never a guess.

use super::Pending;
use crate::exits::ept::EptFault;
use crate::gmem;
use crate::uapi::{self, kvm_run};
use crate::vcpu::{Vcpu, VcpuState};
use kernel::prelude::*;

/// Where the data of an MMIO read goes.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    /// General-purpose register number (0 = RAX ... 15 = R15).
    reg: u8,
    /// Bytes read from the device.
    src_size: u8,
    /// Destination operand size (bytes): larger than `src_size` for MOVZX.
    dst_size: u8,
    /// AH/CH/DH/BH: bits 15:8 of register `reg`.
    high_byte: bool,
}

/// Writes `v` (of `size` bytes) into `old` as the CPU does for a register
/// destination: 8- and 16-bit writes keep the other bits, 32-bit writes
/// zero-extend, 64-bit writes replace.
pub(crate) fn merge(old: u64, v: u64, size: u8, high_byte: bool) -> u64 {
    match size {
        1 if high_byte => (old & !0xff00) | ((v & 0xff) << 8),
        1 => (old & !0xff) | (v & 0xff),
        2 => (old & !0xffff) | (v & 0xffff),
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

fn mask(v: u64, size: u8) -> u64 {
    if size >= 8 { v } else { v & ((1u64 << (8 * u32::from(size))) - 1) }
}

/// Completes an MMIO read at the next KVM_RUN.
pub(crate) fn complete_read(regs: &mut [u64; 16], d: Dest, data: u64) {
    let r = usize::from(d.reg);
    regs[r] = merge(regs[r], mask(data, d.src_size), d.dst_size, d.high_byte);
}

/// A decoded MMIO instruction.
struct Decoded {
    len: u8,
    size: u8,
    write: Option<u64>,
    dest: Option<Dest>,
}

/// Reads register `n` as an operand of `size` bytes.
fn reg_value(regs: &[u64; 16], n: u8, size: u8, high_byte: bool) -> u64 {
    let v = regs[usize::from(n)];
    if high_byte { (v >> 8) & 0xff } else { mask(v, size) }
}

/// Decodes the instruction in `b` (see the module comment). `mode` is the
/// code size: 2 (16-bit), 4 (32-bit) or 8 (64-bit).
fn decode(b: &[u8; 15], mode: u8, regs: &[u64; 16]) -> Option<Decoded> {
    let mut i = 0usize;
    let mut opsize: u8 = if mode == 2 { 2 } else { 4 };
    let mut addrsize: u8 = mode;
    let mut rex = 0u8;
    loop {
        match b[i] {
            0x66 => opsize = if mode == 2 { 4 } else { 2 },
            0x67 => addrsize = match mode { 2 => 4, 4 => 2, _ => 4 },
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
        if i >= 14 {
            return None;
        }
    }
    if mode == 8 && (0x40..=0x4f).contains(&b[i]) {
        rex = b[i];
        i += 1;
    }
    let rex_w = rex & 8 != 0;
    let rex_r = (rex >> 2) & 1;
    if rex_w {
        opsize = 8;
    }
    let (op, two_byte) = if b[i] == 0x0f { i += 1; (b[i], true) } else { (b[i], false) };
    i += 1;
    // MOV AL/eAX <-> moffs (A0-A3): no ModRM, an address-size offset.
    if !two_byte && (0xa0..=0xa3).contains(&op) {
        let size = if op & 1 == 0 { 1 } else { opsize };
        let len = i + usize::from(addrsize);
        if len > 15 {
            return None;
        }
        // CAST: at most 15.
        let len = len as u8;
        return Some(if op < 0xa2 {
            let dest = Dest { reg: 0, src_size: size, dst_size: size, high_byte: false };
            Decoded { len, size, write: None, dest: Some(dest) }
        } else {
            Decoded { len, size, write: Some(reg_value(regs, 0, size, false)), dest: None }
        });
    }
    // ModRM.
    let modrm = *b.get(i)?;
    i += 1;
    let md = modrm >> 6;
    let rm = modrm & 7;
    let regf = ((modrm >> 3) & 7) | (rex_r << 3);
    if md == 3 {
        return None;
    }
    if addrsize == 2 {
        i += match (md, rm) { (0, 6) => 2, (1, _) => 1, (2, _) => 2, _ => 0 };
    } else {
        if rm == 4 {
            let sib = *b.get(i)?;
            i += 1;
            if md == 0 && sib & 7 == 5 {
                i += 4;
            }
        }
        i += match (md, rm) { (0, 5) => 4, (1, _) => 1, (2, _) => 4, _ => 0 };
    }
    // An 8-bit register operand: AH..BH without REX, SPL..DIL with it.
    let byte_reg = |r: u8| -> (u8, bool) {
        if rex == 0 && (4..8).contains(&r) { (r - 4, true) } else { (r, false) }
    };
    let d = match (two_byte, op) {
        (false, 0x88) => {
            let (r, hi) = byte_reg(regf);
            Decoded { len: 0, size: 1, write: Some(reg_value(regs, r, 1, hi)), dest: None }
        }
        (false, 0x89) => Decoded { len: 0, size: opsize, write: Some(reg_value(regs, regf, opsize, false)), dest: None },
        (false, 0x8a) => {
            let (r, hi) = byte_reg(regf);
            Decoded { len: 0, size: 1, write: None, dest: Some(Dest { reg: r, src_size: 1, dst_size: 1, high_byte: hi }) }
        }
        (false, 0x8b) => Decoded {
            len: 0,
            size: opsize,
            write: None,
            dest: Some(Dest { reg: regf, src_size: opsize, dst_size: opsize, high_byte: false }),
        },
        (false, 0xc6) if regf & 7 == 0 => {
            let imm = u64::from(*b.get(i)?);
            i += 1;
            Decoded { len: 0, size: 1, write: Some(imm), dest: None }
        }
        (false, 0xc7) if regf & 7 == 0 => {
            let n = if opsize == 2 { 2 } else { 4 };
            let mut imm = 0u64;
            for k in 0..n {
                imm |= u64::from(*b.get(i + k)?) << (8 * k);
            }
            i += n;
            if opsize == 8 {
                // CAST: imm32 is sign-extended to 64 bits.
                imm = imm as u32 as i32 as i64 as u64;
            }
            Decoded { len: 0, size: opsize, write: Some(imm), dest: None }
        }
        (true, 0xb6) | (true, 0xb7) => {
            let src = if op == 0xb6 { 1 } else { 2 };
            Decoded { len: 0, size: src, write: None, dest: Some(Dest { reg: regf, src_size: src, dst_size: opsize, high_byte: false }) }
        }
        _ => return None,
    };
    if i > 15 || d.dest.map_or(false, |x| x.reg == 4) {
        // Too long, or a load into RSP (which lives in the VMCS).
        return None;
    }
    // CAST: at most 15.
    Some(Decoded { len: i as u8, ..d })
}

/// Reads the 15 bytes at the guest's CS:RIP.
fn fetch(vcpu: &Vcpu, f: &EptFault) -> Result<[u8; 15]> {
    let mut b = [0u8; 15];
    let mut lin = f.cs_base.wrapping_add(f.rip);
    if !f.paging.long_mode {
        lin &= 0xffff_ffff;
    }
    gmem::read_linear(vcpu.vm(), &f.paging, lin, &mut b)?;
    Ok(b)
}

/// Turns an EPT violation outside guest memory into KVM_EXIT_MMIO (or
/// an internal error when the instruction cannot be decoded).
pub(crate) fn start(vcpu: &Vcpu, st: &mut VcpuState, f: &EptFault, run: *mut kvm_run) -> Result {
    let mode = if f.paging.long_mode && f.cs_l { 8 } else if f.cs_db { 4 } else { 2 };
    let decoded = if f.fetch { None } else { fetch(vcpu, f).ok().and_then(|b| decode(&b, mode, st.regs_mut())) };
    let Some(d) = decoded else {
        // SAFETY: plain stores to the run page's `internal` member.
        unsafe {
            (*run).exit_reason = uapi::KVM_EXIT_INTERNAL_ERROR;
            let e = &mut (*run).__bindgen_anon_1.internal;
            e.suberror = uapi::KVM_INTERNAL_ERROR_EMULATION;
            e.ndata = 2;
            e.data[0] = f.gpa;
            e.data[1] = f.rip;
        }
        return Ok(());
    };
    // SAFETY: plain stores to the run page's `mmio` member.
    unsafe {
        (*run).exit_reason = uapi::KVM_EXIT_MMIO;
        let m = &mut (*run).__bindgen_anon_1.mmio;
        m.phys_addr = f.gpa;
        m.len = u32::from(d.size);
        m.is_write = u8::from(d.write.is_some());
        m.data = d.write.unwrap_or(0).to_le_bytes();
    }
    st.pending = Pending::Mmio { len: d.len, dest: d.dest };
    Ok(())
}
