// SPDX-License-Identifier: GPL-2.0

//! I/O instructions (reason 30): rvmx sets "unconditional I/O exiting", so
//! every IN and OUT exits, and is handed to userspace as KVM_EXIT_IO with
//! KVM's layout: the data at `data_offset` from the start of kvm_run (the
//! port-I/O page). For OUT the data is copied there before the exit; for IN
//! userspace writes it there and the next KVM_RUN moves it into RAX.
//! Exit qualification (SDM Vol. 3C, table 28-5): bits 2:0 size - 1, bit 3
//! direction (1 = IN), bit 4 string (INS/OUTS), bit 5 REP, bits 31:16 port.
//!
//! String I/O (INS/OUTS, with or without REP) moves data between the port
//! and guest memory at ES:RDI / seg:RSI, so it is finished outside the guest
//! section (it may sleep): OUTS copies up to a page of elements into the
//! port-I/O page before the exit, INS copies them from there into guest
//! memory at the next KVM_RUN; `kvm_run.io.count` says how many, as in KVM.
//! A REP instruction with elements left is not skipped: the guest executes
//! it again and it exits again. The CPU checks the memory operand only when
//! it executes the instruction, which the exit replaces (SDM Vol. 3C
//! §26.1.1), so rvmx makes its checks: the segment's type and limit outside
//! 64-bit mode, canonical addresses in it, then the page walk.

use super::{Action, EmulCtx, ExitCtx, Pending};
use crate::addr::Linear;
use crate::gmem::{self, Paging};
use crate::walk;
use crate::uapi::{self, PioPage, RunPage};
use crate::guest::reg;
use crate::vm::Vm;
use crate::vmcs::fields::*;
use crate::vmcs::intr::vector;
use crate::vmcs::qualification::IoQual;
use kernel::prelude::*;

/// A string I/O instruction, with what is needed to finish it outside the
/// guest section.
pub(crate) struct StringIo {
    port: u16,
    size: u8,
    is_in: bool,
    rep: bool,
    /// Address size in bytes (2, 4, 8): how much of RSI/RDI/RCX counts.
    addr_size: u8,
    /// Base of the memory operand's segment (ES for INS).
    seg_base: u64,
    /// The segment is SS (a non-canonical address is then #SS, not #GP).
    stack_seg: bool,
    /// Its limit and access rights, checked outside 64-bit mode.
    seg_limits: Option<walk::Segment>,
    /// CR0.PE is clear: a write through a code segment's cached type is let
    /// through (`walk::segment_type_allows`).
    real_mode: bool,
    /// RFLAGS.DF: addresses go down.
    down: bool,
    len: u64,
    paging: Paging,
}

/// A pending string IN: where the data goes when userspace has supplied it,
/// and the registers as they were before the instruction, should the write
/// fault after all.
#[derive(Clone, Copy)]
pub(crate) struct StringIn {
    linear: Linear,
    bytes: u16,
    paging: Paging,
    old_rdi: u64,
    old_rcx: u64,
}

/// Bytes moved per step between guest memory and the port-I/O page.
const BOUNCE: usize = 256;

fn fill_io(run: RunPage, is_in: bool, size: u8, port: u16, count: u32) {
    // CAST: KVM_EXIT_IO_IN/OUT are 1 and 0.
    let direction = if is_in { uapi::KVM_EXIT_IO_IN } else { uapi::KVM_EXIT_IO_OUT } as u8;
    run.exit_io(direction, size, port, count, 4096 * u64::from(uapi::KVM_PIO_PAGE_OFFSET));
}

/// Writes `v` into the low `addr_size` bytes of a register, as the CPU
/// updates RSI/RDI/RCX for that address size.
fn set_addr_reg(old: u64, v: u64, addr_size: u8) -> u64 {
    super::mmio::merge(old, v, addr_size, false)
}

fn mask(addr_size: u8) -> u64 {
    if addr_size == 8 { u64::MAX } else { (1u64 << (8 * u32::from(addr_size))) - 1 }
}

/// Starts a string I/O instruction (outside the guest section). Returns
/// whether KVM_RUN must return to userspace (false: the instruction had
/// nothing to do and was skipped, or it faulted and the fault is queued
/// for the guest).
///
/// The memory operand gets the CPU's checks: a non-canonical address is
/// #GP(0) (#SS(0) through SS), a failed page walk is #PF; then nothing of
/// the instruction has happened. Memory rvmx cannot reach (the buffer in
/// MMIO) is KVM_INTERNAL_ERROR_EMULATION.
pub(crate) fn start_string(cx: &mut EmulCtx<'_>, s: &StringIo) -> Result<bool> {
    let m = mask(s.addr_size);
    let rcx = cx.regs[reg::RCX] & m;
    if s.rep && rcx == 0 {
        *cx.rip_advance = s.len;
        return Ok(false);
    }
    let per_page = 4096 / u64::from(s.size);
    let mut count = if !s.rep || s.down { 1 } else { rcx.min(per_page) };
    let index = if s.is_in { reg::RDI } else { reg::RSI };
    let (old_index, old_rcx) = (cx.regs[index], cx.regs[reg::RCX]);
    let offset = old_index & m;
    // Outside 64-bit mode the segment's type must allow the access (no
    // OUTS from an execute-only code segment, no INS into a read-only data
    // segment or any code segment), and each element must lie within the
    // segment's limit and below the address-size wrap: the first one that
    // does not faults (after the ones before it were done, as the CPU does
    // them one by one).
    if let Some(seg) = s.seg_limits {
        if !walk::segment_type_allows(seg.access_rights, s.is_in, s.real_mode) {
            cx.queue_exception(if s.stack_seg { vector::SS } else { vector::GP }, Some(0), None)?;
            return Ok(false);
        }
        match walk::segment_room(seg, m, offset, u64::from(s.size), count) {
            Some(k) => count = k,
            None => {
                cx.queue_exception(if s.stack_seg { vector::SS } else { vector::GP }, Some(0), None)?;
                return Ok(false);
            }
        }
    }
    // CAST: at most 4096 bytes.
    let bytes = (count * u64::from(s.size)) as u16;
    let linear = s.paging.wrap(Linear(s.seg_base.wrapping_add(offset)));
    let next = if s.down { offset.wrapping_sub(u64::from(bytes)) } else { offset.wrapping_add(u64::from(bytes)) };
    if s.paging.long_mode && !(walk::canonical(linear) && walk::canonical(linear.wrapping_add(u64::from(bytes) - 1))) {
        cx.queue_exception(if s.stack_seg { vector::SS } else { vector::GP }, Some(0), None)?;
        return Ok(false);
    }
    let moved = if s.is_in {
        // The data arrives at the next KVM_RUN; check now that it can be
        // stored, so that a fault is raised before the exit, as on the CPU.
        gmem::probe_write(cx.vm, &s.paging, linear, usize::from(bytes))
    } else {
        copy_to_pio(cx.vm, &s.paging, linear, bytes, cx.pio)
    };
    if let Err(e) = moved {
        if !cx.inject_linear_fault(e)? {
            super::report_internal_error(cx.run, uapi::KVM_INTERNAL_ERROR_EMULATION, super::reason::IO_INSTRUCTION);
            return Ok(true);
        }
        return Ok(false);
    }
    if s.is_in {
        *cx.pending = Pending::StringIn(StringIn { linear, bytes, paging: s.paging, old_rdi: old_index, old_rcx });
    }
    let regs = &mut *cx.regs;
    regs[index] = set_addr_reg(regs[index], next & m, s.addr_size);
    let left = if s.rep { rcx - count } else { 0 };
    if s.rep {
        regs[reg::RCX] = set_addr_reg(regs[reg::RCX], left, s.addr_size);
    }
    if left == 0 {
        *cx.rip_advance = s.len;
    }
    // CAST: at most 4096 elements.
    fill_io(cx.run, s.is_in, s.size, s.port, count as u32);
    Ok(true)
}

/// OUTS: copies `bytes` of guest memory at `linear` into the port-I/O page,
/// through a small bounce buffer (the kernel stack has no room for a page,
/// and the PIO page is shared with userspace: only `PioPage` touches it).
fn copy_to_pio(vm: &Vm, p: &Paging, linear: Linear, bytes: u16, pio: PioPage) -> Result<(), gmem::LinearError> {
    let mut buf = [0u8; BOUNCE];
    let mut done = 0usize;
    while done < usize::from(bytes) {
        let n = (usize::from(bytes) - done).min(BOUNCE);
        let at = p.wrap(linear.wrapping_add(done as u64));
        gmem::read_linear(vm, p, at, &mut buf[..n], false)?;
        pio.write(done, &buf[..n]);
        done += n;
    }
    Ok(())
}

/// Finishes a string IN at the next KVM_RUN: the data userspace put in the
/// port-I/O page goes to guest memory. If the guest changed its page tables
/// while userspace handled the exit and the write faults now, the
/// instruction is undone (RDI, RCX, RIP as before it) and the #PF queued;
/// if the buffer is no longer in guest RAM (another vCPU changed the page
/// tables, the VMM the slots), it is undone too and the exit is an
/// emulation error: returns true, with the run page filled in.
pub(crate) fn complete_string_in(cx: &mut EmulCtx<'_>, p: &StringIn) -> Result<bool> {
    let mut buf = [0u8; BOUNCE];
    let mut done = 0usize;
    while done < usize::from(p.bytes) {
        let n = (usize::from(p.bytes) - done).min(BOUNCE);
        cx.pio.read(done, &mut buf[..n]);
        let at = p.paging.wrap(p.linear.wrapping_add(done as u64));
        if let Err(e) = gmem::write_linear(cx.vm, &p.paging, at, &buf[..n]) {
            cx.regs[reg::RDI] = p.old_rdi;
            cx.regs[reg::RCX] = p.old_rcx;
            *cx.rip_advance = 0;
            if cx.inject_linear_fault(e)? {
                return Ok(false);
            }
            super::report_internal_error(cx.run, uapi::KVM_INTERNAL_ERROR_EMULATION, super::reason::IO_INSTRUCTION);
            return Ok(true);
        }
        done += n;
    }
    Ok(false)
}


pub(crate) fn io_instruction(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let q = IoQual(ctx.vmcs.read(EXIT_QUALIFICATION).0);
    let (size, is_in, port) = (q.size(), q.is_in(), q.port());
    if q.string() {
        if !ctx.ins_outs_info {
            // Without the instruction-information field for INS/OUTS
            // (IA32_VMX_BASIC[54]) the instruction would have to be decoded.
            return Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, 30));
        }
        let info = ctx.vmcs.read(EXIT_INSTRUCTION_INFO);
        // Bits 9:7: address size 0/1/2 = 16/32/64; bits 17:15: segment.
        let addr_size = 2u8 << ((info >> 7) & 7).min(2);
        let seg = if is_in { 0 } else { (info >> 15) & 7 };
        let fields = match seg {
            0 => &GUEST_ES,
            1 => &GUEST_CS,
            2 => &GUEST_SS,
            3 => &GUEST_DS,
            4 => &GUEST_FS,
            _ => &GUEST_GS,
        };
        let paging = Paging::capture(ctx.vmcs);
        let mode64 = paging.long_mode && ctx.vmcs.read(GUEST_CS_AR) & (1 << 13) != 0;
        let seg_limits = (!mode64).then(|| walk::Segment {
            limit: ctx.vmcs.read(fields.limit),
            access_rights: ctx.vmcs.read(fields.access_rights),
        });
        return Ok(Action::StringIo(StringIo {
            port,
            size,
            is_in,
            rep: q.rep(),
            addr_size,
            seg_base: ctx.vmcs.read(fields.base).0,
            stack_seg: seg == 2,
            seg_limits,
            real_mode: ctx.vmcs.guest_cr0() & crate::hw::cr::CR0_PE == 0,
            down: ctx.vmcs.read(GUEST_RFLAGS).0 & (1 << 10) != 0,
            len: u64::from(ctx.vmcs.read(EXIT_INSTRUCTION_LEN)),
            paging,
        }));
    }
    if is_in {
        *ctx.pending = Pending::PioIn { size };
    } else {
        let data = ctx.regs[reg::RAX].to_le_bytes();
        ctx.pio.write(0, &data[..usize::from(size)]);
    }
    fill_io(ctx.run, is_in, size, port, 1);
    ctx.skip_instruction()?;
    Ok(Action::ToUser)
}
