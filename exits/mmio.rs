// SPDX-License-Identifier: GPL-2.0

//! MMIO: a guest access to a guest-physical address with no memory slot
//! (or a write to a read-only slot) is a device access, which userspace
//! emulates (KVM_EXIT_MMIO: address, length, data, direction).
//!
//! An EPT violation tells the address but not the data or the register: for
//! that rvmx reads the faulting instruction from guest memory (translating
//! RIP through the guest's own page tables, gmem.rs) and decodes it
//! (decode.rs, which says which instructions are understood). Anything else
//! is KVM_EXIT_INTERNAL_ERROR (emulation), never a guess.
//!
//! An access that crosses a page boundary is split as KVM's emulator splits
//! it: with guest RAM on one side, the RAM bytes are read or written here
//! and only the device's bytes go out, at the device's address; with a
//! device on both sides, there are two exits, one per page (KVM's "MMIO
//! fragments"). The EPT violation reports only the side that faulted, so
//! the start comes from the decoded memory operand.

use super::decode::{self, Access, CodeSize, Reg, MAX_INSN_LEN};
use super::{EmulCtx, Pending};
use crate::exits::ept::EptFault;
use crate::addr::{Gpa, Linear, PAGE_SIZE};
use crate::gmem;
use crate::uapi;
use crate::guest::reg;
use crate::vm::Vm;
use crate::vmcs::{fields::*, Vmcs};
use kernel::prelude::*;

/// Where the data of an MMIO read goes.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    reg: Reg,
    /// Bytes read from the device.
    src_size: u8,
    /// Destination operand size (bytes): larger than `src_size` for MOVZX.
    dst_size: u8,
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

/// How an access split across a page boundary is put together: the bytes
/// already known (read from RAM, or from the first of two device
/// fragments), where the device's bytes of this exit go in the value, and
/// the second device fragment still to come (`whole`: one exit has it all).
#[derive(Clone, Copy)]
pub(crate) struct RamPart {
    /// The bytes known so far, already at their position in the value.
    value: u64,
    /// The device's bytes start at this byte of the value.
    device_at: u8,
    /// How many bytes the device supplies.
    device_len: u8,
    /// A second device fragment: its guest-physical address; it has the
    /// bytes after this exit's.
    next: Option<Gpa>,
    /// The whole access's size in bytes.
    size: u8,
}

impl RamPart {
    const fn whole(len: u8) -> Self {
        RamPart { value: 0, device_at: 0, device_len: len, next: None, size: len }
    }

    /// After the first of two device fragments completed with `data`: the
    /// exit for the second, and how it is put together.
    pub(crate) fn second_fragment(&self, data: u64) -> Option<(Gpa, RamPart)> {
        let gpa = self.next?;
        let value = self.combine(data);
        let at = self.device_at + self.device_len;
        Some((gpa, RamPart { value, device_at: at, device_len: self.size - at, next: None, size: self.size }))
    }

    /// The bytes of a write that go to this exit's device fragment.
    pub(crate) fn device_bytes(&self, write: u64) -> u64 {
        mask(write >> (8 * u32::from(self.device_at)), self.device_len)
    }

    /// The fragment's length.
    pub(crate) fn device_len(&self) -> u8 {
        self.device_len
    }

    /// The value of the read, from the device's `data`.
    pub(crate) fn combine(&self, data: u64) -> u64 {
        self.value | (mask(data, self.device_len) << (8 * u32::from(self.device_at)))
    }
}

/// Completes an MMIO read at the next KVM_RUN.
pub(crate) fn complete_read(regs: &mut [u64; 16], d: Dest, data: u64) {
    // The decoder's register numbers are 0..=15; RSP (4, not high byte)
    // was refused in `start`.
    let r = usize::from(d.reg.num & 15);
    regs[r] = merge(regs[r], mask(data, d.src_size), d.dst_size, d.reg.high_byte);
}

/// The guest state needed to emulate the instruction behind an MMIO exit,
/// read from the VMCS only for MMIO exits (`InsnCtx::read`).
pub(crate) struct InsnCtx {
    pub(crate) rip: u64,
    pub(crate) cs_base: u64,
    /// CS.D (default operand size 32) and CS.L (64-bit code).
    pub(crate) cs_db: bool,
    pub(crate) cs_l: bool,
    /// RSP, for an MMIO store of RSP or SPL (it is not in the saved GPRs).
    pub(crate) rsp: u64,
    pub(crate) paging: gmem::Paging,
}

impl InsnCtx {
    /// Reads it from the VMCS, after the guest section, so that the EPT
    /// violations that only map RAM (nearly all of them) do not pay for it.
    fn read(vmcs: &mut Vmcs) -> Result<InsnCtx> {
        let v = vmcs.load()?;
        let cs_ar = v.read(GUEST_CS_AR);
        Ok(InsnCtx {
            rip: v.read(GUEST_RIP).0,
            cs_base: v.read(GUEST_CS_BASE).0,
            cs_db: cs_ar & (1 << 14) != 0,
            cs_l: cs_ar & (1 << 13) != 0,
            rsp: v.read(GUEST_RSP).0,
            paging: gmem::Paging::capture(&v),
        })
    }
}

/// The base of segment `seg` (decode.rs numbering: ES, CS, SS, DS, FS,
/// GS), for an MMIO access that may cross a page.
fn segment_base(vmcs: &mut Vmcs, seg: u8) -> Result<u64> {
    let v = vmcs.load()?;
    let field = match seg {
        decode::ES => GUEST_ES.base,
        decode::CS => GUEST_CS.base,
        decode::SS => GUEST_SS.base,
        decode::DS => GUEST_DS.base,
        decode::FS => GUEST_FS.base,
        _ => GUEST_GS.base,
    };
    Ok(v.read(field).0)
}

/// Reads up to 15 bytes at the guest's CS:RIP: as many as guest memory
/// has (an instruction may end just before an unmapped page), at least the
/// first one. Returns the buffer and how many bytes are valid.
fn fetch(vm: &Vm, f: &InsnCtx) -> Result<([u8; MAX_INSN_LEN], usize), gmem::LinearError> {
    let mut b = [0u8; MAX_INSN_LEN];
    let lin = f.paging.wrap(Linear(f.cs_base.wrapping_add(f.rip)));
    // CAST: the remainder of a page, at most 4096.
    let first = ((PAGE_SIZE - lin.page_offset()) as usize).min(MAX_INSN_LEN);
    gmem::read_linear(vm, &f.paging, lin, &mut b[..first], true)?;
    if first < MAX_INSN_LEN {
        let next = f.paging.wrap(lin.wrapping_add(first as u64));
        if gmem::read_linear(vm, &f.paging, next, &mut b[first..], true).is_err() {
            return Ok((b, first));
        }
    }
    Ok((b, MAX_INSN_LEN))
}

/// Turns an EPT violation outside guest memory into KVM_EXIT_MMIO, or into
/// KVM_EXIT_INTERNAL_ERROR when it cannot be emulated (both: `Ok(true)`,
/// return to userspace), or into a #PF when the guest's page tables no
/// longer map its instruction (`Ok(false)`, enter the guest again):
/// - the violation happened while the CPU delivered an event (its IDT or
///   stack in MMIO): KVM_INTERNAL_ERROR_DELIVERY_EV, as KVM reports it;
/// - it was the guest's own page walk (its page tables outside guest RAM):
///   the #PF KVM injects (`page_walk_fault`);
/// - an instruction fetch, an instruction rvmx does not decode, or a load
///   into RSP: KVM_INTERNAL_ERROR_EMULATION. (A fetch from MMIO is not a
///   data access of the instruction at RIP, so decoding that instruction
///   would emulate the wrong thing.)
pub(crate) fn start(cx: &mut EmulCtx<'_>, e: &EptFault) -> Result<bool> {
    let run = cx.run;
    if e.vectoring_info.valid() {
        let data = [u64::from(e.vectoring_info.0), u64::from(super::reason::EPT_VIOLATION), e.qualification.0, e.gpa.0];
        run.exit_internal_error(uapi::KVM_INTERNAL_ERROR_DELIVERY_EV, &data);
        return Ok(true);
    }
    let f = &InsnCtx::read(cx.vmcs)?;
    let mode = if f.paging.long_mode && f.cs_l {
        CodeSize::Bits64
    } else if f.cs_db {
        CodeSize::Bits32
    } else {
        CodeSize::Bits16
    };
    if e.in_page_walk {
        return page_walk_fault(cx, e, f, mode);
    }
    let decoded = if e.fetch {
        None
    } else {
        match fetch(cx.vm, f) {
            Ok((b, n)) => decode::decode(&b[..n], mode),
            // Another vCPU changed the page tables since the CPU fetched
            // the instruction: the fetch faults now, as KVM's would.
            Err(err) if cx.inject_linear_fault(err)? => return Ok(false),
            Err(_) => None,
        }
    };
    // RSP is not in `regs` (it lives in the VMCS): a load into it is not
    // emulated (KVM's emulator could, compilers never do it to a device).
    let decoded = decoded.filter(|d| !matches!(d.access, Access::Load { reg: Reg { num: 4, high_byte: false }, .. }));
    let Some(d) = decoded else {
        run.exit_internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, &[e.gpa.0, f.rip]);
        return Ok(true);
    };
    let regs = *cx.regs;
    let read_reg = |r: Reg| -> u64 {
        // Register 4 is RSP (or SPL), whose value is in the VMCS.
        let v = if r.num & 15 == reg::RSP as u8 { f.rsp } else { regs[usize::from(r.num & 15)] };
        if r.high_byte { (v >> 8) & 0xff } else { mask(v, d.size) }
    };
    let (write, dest) = match d.access {
        Access::StoreReg(r) => (Some(read_reg(r)), None),
        Access::StoreImm(v) => (Some(mask(v, d.size)), None),
        Access::Load { reg, dst_size } => (None, Some(Dest { reg, src_size: d.size, dst_size })),
    };
    let reg_value = |n: u8| if n & 15 == reg::RSP as u8 { f.rsp } else { regs[usize::from(n & 15)] };
    let ram = match split(cx, f, &d, e.gpa, mode, write, reg_value) {
        Ok(r) => r,
        Err(err) if cx.inject_linear_fault(err)? => return Ok(false),
        Err(_) => RamPart::whole(d.size),
    };
    let device_write = write.map(|v| ram.device_bytes(v));
    run.exit_mmio(e.gpa.0, u32::from(ram.device_len), device_write);
    *cx.pending = Pending::Mmio { len: d.len, dest, ram, write };
    Ok(true)
}

/// The CPU's walk of the guest's page tables reached a table outside guest
/// RAM (CR3, or an entry, pointing past it). KVM's emulator then redoes the
/// walk and injects the #PF it ends in, a not-present fault with the
/// access's bits (arch/x86/kvm/mmu/paging_tmpl.h, walk_addr_generic); rvmx
/// does the same with its own walk (walk.rs): first the instruction's
/// fetch, which faults if the code's own translation needs that table,
/// then the access at the linear address the CPU was translating, a write
/// if the decoded instruction stores (otherwise a read: rvmx decodes only
/// the MOVs of MMIO). Returns as `start`. A walk that does not fault now
/// (another vCPU changed the tables) or cannot be done is an emulation
/// error: never a guest re-entered to exit the same way again.
fn page_walk_fault(cx: &mut EmulCtx<'_>, e: &EptFault, f: &InsnCtx, mode: CodeSize) -> Result<bool> {
    let write = match fetch(cx.vm, f) {
        Ok((b, n)) => decode::decode(&b[..n], mode).is_some_and(|d| !matches!(d.access, Access::Load { .. })),
        Err(err) if cx.inject_linear_fault(err)? => return Ok(false),
        Err(_) => false,
    };
    let linear = Linear(cx.vmcs.load()?.read(GUEST_LINEAR_ADDRESS).0);
    match gmem::data_gpa(cx.vm, &f.paging, linear, write) {
        Err(err) if cx.inject_linear_fault(err)? => Ok(false),
        _ => {
            cx.run.exit_internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, &[e.gpa.0, f.rip]);
            Ok(true)
        }
    }
}

/// Splits an access of `d.size` bytes that crosses a page with RAM on one
/// side: does the RAM side (a write's bytes stored, a read's bytes read)
/// and says which bytes the device has. An access within one page, or
/// with the device on both sides, is the device's whole (the exit reports
/// the side that faulted first). An error is what the RAM side's access
/// ran into (the guest's page tables changed since the exit): a #PF to
/// inject, or `Unhandled` (then the device gets the access whole).
#[allow(clippy::too_many_arguments)]
fn split(
    cx: &mut EmulCtx<'_>,
    f: &InsnCtx,
    d: &decode::Insn,
    gpa: Gpa,
    mode: CodeSize,
    write: Option<u64>,
    reg_value: impl Fn(u8) -> u64,
) -> Result<RamPart, gmem::LinearError> {
    let size = u64::from(d.size);
    let off = gpa.page_offset();
    // The device's side starts mid-page and the access fits: the common
    // case, decided without reading anything more.
    if off != 0 && off + size <= 4096 {
        return Ok(RamPart::whole(d.size));
    }
    // In 64-bit mode only FS and GS have a base.
    let seg_base = if mode == CodeSize::Bits64 && !matches!(d.mem.seg, decode::FS | decode::GS) {
        0
    } else {
        segment_base(cx.vmcs, d.mem.seg).map_err(|_| gmem::LinearError::Unhandled)?
    };
    let linear = f.paging.wrap(Linear(seg_base.wrapping_add(d.mem.effective_address(reg_value, f.rip, d.len))));
    let first = PAGE_SIZE - linear.page_offset();
    if first >= size || (off != 0 && linear.page_offset() != off) {
        // Within one page after all, or not the access the exit reports.
        return Ok(RamPart::whole(d.size));
    }
    // CAST: fewer than `size` <= 8 bytes.
    let n1 = first as u8;
    let bytes = write.unwrap_or(0).to_le_bytes();
    let vm = cx.vm;
    let mut b = [0u8; 8];
    if off == 0 && linear.page_offset() != 0 {
        // RAM, then the device at `gpa`: the RAM side is the first n1 bytes.
        let r = 0..usize::from(n1);
        if write.is_some() {
            gmem::write_linear(vm, &f.paging, linear, &bytes[r])?;
        } else {
            gmem::read_linear(vm, &f.paging, linear, &mut b[r], false)?;
        }
        Ok(RamPart { value: u64::from_le_bytes(b), device_at: n1, device_len: d.size - n1, next: None, size: d.size })
    } else {
        // The device at `gpa`, then the next page: RAM, or a device too
        // (a second fragment, at that page's address).
        let next = f.paging.wrap(linear.wrapping_add(first));
        let next_gpa = gmem::data_gpa(vm, &f.paging, next, write.is_some())?;
        if !vm.is_ram(next_gpa, write.is_some()) {
            return Ok(RamPart { value: 0, device_at: 0, device_len: n1, next: Some(next_gpa), size: d.size });
        }
        let r = usize::from(n1)..usize::from(d.size);
        if write.is_some() {
            gmem::write_linear(vm, &f.paging, next, &bytes[r])?;
        } else {
            gmem::read_linear(vm, &f.paging, next, &mut b[r], false)?;
        }
        Ok(RamPart { value: u64::from_le_bytes(b), device_at: 0, device_len: n1, next: None, size: d.size })
    }
}
