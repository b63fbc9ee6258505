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

use super::decode::{self, Access, CodeSize, Reg, MAX_INSN_LEN};
use super::Pending;
use crate::exits::ept::EptFault;
use crate::gmem;
use crate::uapi::{self, RunPage};
use crate::vcpu::{reg, Vcpu, VcpuState};
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

/// Completes an MMIO read at the next KVM_RUN.
pub(crate) fn complete_read(regs: &mut [u64; 16], d: Dest, data: u64) {
    // The decoder's register numbers are 0..=15; RSP (4, not high byte)
    // was refused in `start`.
    let r = usize::from(d.reg.num & 15);
    regs[r] = merge(regs[r], mask(data, d.src_size), d.dst_size, d.reg.high_byte);
}

/// The guest state needed to emulate the instruction behind an MMIO exit,
/// read from the VMCS only for MMIO exits (vcpu/mod.rs `insn_context`).
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

/// Reads up to 15 bytes at the guest's CS:RIP: as many as guest memory
/// has (an instruction may end just before an unmapped page), at least the
/// first one. Returns the buffer and how many bytes are valid.
fn fetch(vcpu: &Vcpu, f: &InsnCtx) -> Result<([u8; MAX_INSN_LEN], usize), gmem::LinearError> {
    let mut b = [0u8; MAX_INSN_LEN];
    let lin = f.paging.wrap(f.cs_base.wrapping_add(f.rip));
    // CAST: the remainder of a page, at most 4096.
    let first = ((4096 - lin % 4096) as usize).min(MAX_INSN_LEN);
    gmem::read_linear(vcpu.vm(), &f.paging, lin, &mut b[..first], true)?;
    if first < MAX_INSN_LEN {
        let next = f.paging.wrap(lin.wrapping_add(first as u64));
        if gmem::read_linear(vcpu.vm(), &f.paging, next, &mut b[first..], true).is_err() {
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
/// - it was the guest's own page walk (its page tables in MMIO), an
///   instruction fetch, an instruction rvmx does not decode, or a load into
///   RSP: KVM_INTERNAL_ERROR_EMULATION.
///   The instruction at RIP is not the access that faulted in the first
///   two cases, so decoding it would emulate the wrong thing.
pub(crate) fn start(vcpu: &Vcpu, st: &mut VcpuState, e: &EptFault, run: RunPage) -> Result<bool> {
    if e.vectoring_info & super::INTR_INFO_VALID != 0 {
        let data = [u64::from(e.vectoring_info), u64::from(super::reason::EPT_VIOLATION), e.qualification, e.gpa];
        run.exit_internal_error(uapi::KVM_INTERNAL_ERROR_DELIVERY_EV, &data);
        return Ok(true);
    }
    let f = &st.insn_context()?;
    let mode = if f.paging.long_mode && f.cs_l {
        CodeSize::Bits64
    } else if f.cs_db {
        CodeSize::Bits32
    } else {
        CodeSize::Bits16
    };
    let decoded = if e.fetch || e.in_page_walk {
        None
    } else {
        match fetch(vcpu, f) {
            Ok((b, n)) => decode::decode(&b[..n], mode),
            // Another vCPU changed the page tables since the CPU fetched
            // the instruction: the fetch faults now, as KVM's would.
            Err(err) if st.inject_linear_fault(err)? => return Ok(false),
            Err(_) => None,
        }
    };
    // RSP is not in `regs` (it lives in the VMCS): a load into it is not
    // emulated (KVM's emulator could, compilers never do it to a device).
    let decoded = decoded.filter(|d| !matches!(d.access, Access::Load { reg: Reg { num: 4, high_byte: false }, .. }));
    let Some(d) = decoded else {
        run.exit_internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, &[e.gpa, f.rip]);
        return Ok(true);
    };
    let regs = st.regs_mut();
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
    run.exit_mmio(e.gpa, u32::from(d.size), write);
    st.pending = Pending::Mmio { len: d.len, dest };
    Ok(true)
}
