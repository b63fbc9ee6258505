// SPDX-License-Identifier: GPL-2.0

//! Guest memory by *linear* address, for the exits that must read or write
//! what the guest points at: the instruction behind an MMIO access
//! (exits/mmio.rs) and the buffer of a string I/O instruction (exits/io.rs).
//! The guest's own page tables turn its linear addresses into guest-
//! physical ones (walked here: 4-level in long mode, PAE paging from the
//! PDPTEs, 2-level 32-bit paging), and the memory slots
//! turn those into the launcher's addresses (vm.rs). May sleep: used outside
//! guest sections only.

use crate::hw::cr::*;
use crate::vm::Vm;
use crate::vmcs::{controls, fields::*, Loaded};
use kernel::prelude::*;

/// How the guest translated addresses at the time of an exit.
#[derive(Clone, Copy)]
pub(crate) struct Paging {
    pub(crate) enabled: bool,
    pub(crate) long_mode: bool,
    pub(crate) pae: bool,
    pub(crate) cr3: u64,
    /// With 32-bit PAE paging: the PDPTEs the CPU was using (with EPT, VM
    /// exit saves them in the VMCS).
    pub(crate) pdptes: [u64; 4],
}

impl Paging {
    /// Reads the guest's paging mode from the VMCS (in a guest section).
    pub(crate) fn capture(v: &Loaded<'_>) -> Self {
        let enabled = v.read(CR0_READ_SHADOW).0 & CR0_PG != 0;
        let long_mode = v.read(ENTRY_CONTROLS) & controls::entry::IA32E_MODE_GUEST != 0;
        let pae = v.read(CR4_READ_SHADOW).0 & CR4_PAE != 0;
        let pdptes = if enabled && pae && !long_mode {
            [v.read(GUEST_PDPTE0), v.read(GUEST_PDPTE1), v.read(GUEST_PDPTE2), v.read(GUEST_PDPTE3)]
        } else {
            [0; 4]
        };
        Paging { enabled, long_mode, pae, cr3: v.read(GUEST_CR3).0, pdptes }
    }
}

const PAGE: u64 = 4096;

/// Translates a guest linear address to a guest-physical one.
pub(crate) fn translate(vm: &Vm, p: &Paging, linear: u64) -> Result<u64> {
    if !p.enabled {
        return Ok(linear);
    }
    let read = |gpa: u64, wide: bool| -> Result<u64> {
        let mut b = [0u8; 8];
        vm.read_guest(gpa, if wide { &mut b[..] } else { &mut b[..4] })?;
        Ok(u64::from_le_bytes(b))
    };
    if p.long_mode {
        let mut table = p.cr3 & 0x000f_ffff_ffff_f000;
        for level in (0..4).rev() {
            let shift = 12 + 9 * level;
            let e = read(table + ((linear >> shift) & 0x1ff) * 8, true)?;
            if e & 1 == 0 {
                return Err(EFAULT);
            }
            let addr = e & 0x000f_ffff_ffff_f000;
            // A large page: 1 GiB at the PDPT level, 2 MiB at the PD level.
            if level == 0 || (level < 3 && e & (1 << 7) != 0) {
                let page_mask = (1u64 << shift) - 1;
                return Ok((addr & !page_mask) | (linear & page_mask));
            }
            table = addr;
        }
        Err(EFAULT)
    } else if p.pae {
        // PDPTE (bits 31:30) -> page directory (29:21) -> page table
        // (20:12), 8-byte entries; a PDE with bit 7 maps a 2 MiB page.
        // CAST: two bits.
        let pdpte = p.pdptes[((linear >> 30) & 3) as usize];
        if pdpte & 1 == 0 {
            return Err(EFAULT);
        }
        let pde = read((pdpte & 0x000f_ffff_ffff_f000) + ((linear >> 21) & 0x1ff) * 8, true)?;
        if pde & 1 == 0 {
            return Err(EFAULT);
        }
        if pde & (1 << 7) != 0 {
            return Ok((pde & 0x000f_ffff_ffe0_0000) | (linear & 0x1f_ffff));
        }
        let pte = read((pde & 0x000f_ffff_ffff_f000) + ((linear >> 12) & 0x1ff) * 8, true)?;
        if pte & 1 == 0 {
            return Err(EFAULT);
        }
        Ok((pte & 0x000f_ffff_ffff_f000) | (linear & 0xfff))
    } else {
        let pde = read((p.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4, false)?;
        if pde & 1 == 0 {
            return Err(EFAULT);
        }
        if pde & (1 << 7) != 0 {
            return Ok((pde & 0xffc0_0000) | (linear & 0x3f_ffff));
        }
        let pte = read((pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4, false)?;
        if pte & 1 == 0 {
            return Err(EFAULT);
        }
        Ok((pte & 0xffff_f000) | (linear & 0xfff))
    }
}

/// Reads `buf.len()` bytes at guest linear address `linear`.
pub(crate) fn read_linear(vm: &Vm, p: &Paging, mut linear: u64, buf: &mut [u8]) -> Result {
    let mut done = 0;
    while done < buf.len() {
        let n = ((PAGE - linear % PAGE) as usize).min(buf.len() - done);
        let gpa = translate(vm, p, linear)?;
        vm.read_guest(gpa, &mut buf[done..done + n])?;
        done += n;
        linear += n as u64;
    }
    Ok(())
}

/// Writes `buf` at guest linear address `linear`.
pub(crate) fn write_linear(vm: &Vm, p: &Paging, mut linear: u64, buf: &[u8]) -> Result {
    let mut done = 0;
    while done < buf.len() {
        let n = ((PAGE - linear % PAGE) as usize).min(buf.len() - done);
        let gpa = translate(vm, p, linear)?;
        vm.write_guest(gpa, &buf[done..done + n])?;
        done += n;
        linear += n as u64;
    }
    Ok(())
}
