// SPDX-License-Identifier: GPL-2.0

//! Guest memory by *linear* address, for the exits that must read or write
//! what the guest points at: the instruction behind an MMIO access
//! (exits/mmio.rs) and the buffer of a string I/O instruction (exits/io.rs).
//! The guest's own page tables turn its linear addresses into guest-
//! physical ones (walk.rs, with the CPU's checks: a failure is the #PF the
//! guest would have taken), and the memory slots turn those into the
//! launcher's addresses (vm.rs). May sleep: used outside guest sections
//! only.

use crate::addr::{Gpa, Linear, PAGE_SIZE};
use crate::hw::cr::*;
use crate::vm::Vm;
use crate::vmcs::{controls, fields::*, Loaded};
use crate::walk::{self, Access, GuestPhys, Mode, WalkError};

const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_AC: u64 = 1 << 18;

/// How the guest translated addresses at the time of an exit, and with
/// which privilege its instruction accessed memory.
#[derive(Clone, Copy)]
pub(crate) struct Paging {
    /// The paging mode and the CR0/CR4/EFER bits the walk needs (its
    /// `maxphyaddr` is filled in when the walk runs).
    pub(crate) walk: walk::Paging,
    /// IA-32e mode: 64-bit linear addresses (else they wrap at 4 GiB).
    pub(crate) long_mode: bool,
    /// CPL 3: the instruction's accesses are user-mode accesses.
    pub(crate) user: bool,
    /// RFLAGS.AC (lifts SMAP).
    pub(crate) ac: bool,
}

impl Paging {
    /// Reads the guest's paging state from the VMCS (in a guest section;
    /// on the exit path of every EPT violation and string I/O, so only
    /// VMCS reads).
    pub(crate) fn capture(v: &Loaded<'_>) -> Self {
        let cr0 = v.guest_cr0();
        let cr4 = v.guest_cr4();
        let efer = v.read(GUEST_IA32_EFER);
        let long_mode = v.read(ENTRY_CONTROLS) & controls::entry::IA32E_MODE_GUEST != 0;
        let mode = if cr0 & CR0_PG == 0 {
            Mode::Off
        } else if long_mode {
            Mode::Long
        } else if cr4 & CR4_PAE != 0 {
            // With EPT, VM exit saves the PDPTEs the CPU was using.
            Mode::Pae { pdptes: [v.read(GUEST_PDPTE0), v.read(GUEST_PDPTE1), v.read(GUEST_PDPTE2), v.read(GUEST_PDPTE3)] }
        } else {
            Mode::Bits32 { pse: cr4 & CR4_PSE != 0 }
        };
        let walk = walk::Paging {
            mode,
            cr3: v.read(GUEST_CR3).0,
            wp: cr0 & CR0_WP != 0,
            nxe: efer & EFER_NXE != 0,
            smep: cr4 & CR4_SMEP != 0,
            smap: cr4 & CR4_SMAP != 0,
            maxphyaddr: 0,
        };
        let user = v.guest_cpl() == 3;
        Paging { walk, long_mode, user, ac: v.read(GUEST_RFLAGS).0 & RFLAGS_AC != 0 }
    }

    /// A linear address as the CPU forms it: outside IA-32e mode linear
    /// addresses are 32 bits wide and wrap at 4 GiB.
    pub(crate) fn wrap(&self, linear: Linear) -> Linear {
        if self.long_mode { linear } else { Linear(linear.0 & 0xffff_ffff) }
    }
}

/// Why guest memory could not be reached by a linear address.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinearError {
    /// The CPU would have raised #PF for this address with this error
    /// code: the caller injects it.
    PageFault { addr: Linear, code: u32 },
    /// Not guest RAM (page tables or the buffer in MMIO), or the tables kept
    /// changing: the caller reports that it cannot emulate.
    Unhandled,
}

/// The VM's memory as the page walk sees it.
struct Phys<'a>(&'a Vm);

impl GuestPhys for Phys<'_> {
    fn read_entry(&mut self, gpa: Gpa, wide: bool) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.read_guest(gpa, if wide { &mut b[..] } else { &mut b[..4] }).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn cmpxchg_entry(&mut self, gpa: Gpa, wide: bool, old: u64, new: u64) -> Option<bool> {
        self.0.cmpxchg_guest(gpa, wide, old, new).ok()
    }
}

/// Translates a guest linear address for `acc`, as the CPU would.
fn translate(vm: &Vm, p: &Paging, linear: Linear, acc: Access) -> Result<Gpa, LinearError> {
    let maxphyaddr = crate::vmxon::caps().map_or(36, |c| c.maxphyaddr);
    let wp = walk::Paging { maxphyaddr, ..p.walk };
    walk::translate(&mut Phys(vm), &wp, linear, acc).map_err(|e| match e {
        WalkError::PageFault(code) => LinearError::PageFault { addr: linear, code },
        WalkError::Unhandled => LinearError::Unhandled,
    })
}

/// The guest-physical address of a data access at `linear` (a write if
/// `write`), as the CPU translates it (accessed/dirty bits included).
pub(crate) fn data_gpa(vm: &Vm, p: &Paging, linear: Linear, write: bool) -> Result<Gpa, LinearError> {
    translate(vm, p, linear, Access { write, fetch: false, user: p.user, ac: p.ac })
}

/// Calls `f(gpa, range)` for each page-sized piece of `len` bytes at
/// `linear`, translated for `acc`.
fn for_each_page(
    vm: &Vm,
    p: &Paging,
    mut linear: Linear,
    len: usize,
    acc: Access,
    mut f: impl FnMut(Gpa, core::ops::Range<usize>) -> Result<(), LinearError>,
) -> Result<(), LinearError> {
    let mut done = 0;
    while done < len {
        // CAST: the remainder of a page, at most 4096.
        let n = ((PAGE_SIZE - linear.page_offset()) as usize).min(len - done);
        let gpa = translate(vm, p, linear, acc)?;
        f(gpa, done..done + n)?;
        done += n;
        // A buffer may run past the top of the address space (RSI = -1, or
        // RIP just below 2^64 or 4 GiB): the next byte is at 0, as on the
        // CPU, never an overflow.
        linear = p.wrap(linear.wrapping_add(n as u64));
    }
    Ok(())
}

/// Reads `buf.len()` bytes at guest linear address `linear`: an
/// instruction fetch (`fetch`) or a data read by the guest's instruction.
pub(crate) fn read_linear(vm: &Vm, p: &Paging, linear: Linear, buf: &mut [u8], fetch: bool) -> Result<(), LinearError> {
    let acc = Access { write: false, fetch, user: p.user, ac: p.ac };
    for_each_page(vm, p, linear, buf.len(), acc, |gpa, r| {
        vm.read_guest(gpa, &mut buf[r]).map_err(|_| LinearError::Unhandled)
    })
}

/// Writes `buf` at guest linear address `linear`.
pub(crate) fn write_linear(vm: &Vm, p: &Paging, linear: Linear, buf: &[u8]) -> Result<(), LinearError> {
    let acc = Access { write: true, fetch: false, user: p.user, ac: p.ac };
    for_each_page(vm, p, linear, buf.len(), acc, |gpa, r| {
        vm.write_guest(gpa, &buf[r]).map_err(|_| LinearError::Unhandled)
    })
}

/// Checks that the guest could write `len` bytes at `linear` (the walk sets
/// the accessed and dirty bits, as the CPU's write would), without writing.
pub(crate) fn probe_write(vm: &Vm, p: &Paging, linear: Linear, len: usize) -> Result<(), LinearError> {
    let acc = Access { write: true, fetch: false, user: p.user, ac: p.ac };
    // Every page must also be writable guest RAM: rvmx does not turn the
    // stores of a string IN into MMIO exits (Unhandled: an emulation error).
    for_each_page(vm, p, linear, len, acc, |gpa, _| if vm.is_ram(gpa, true) { Ok(()) } else { Err(LinearError::Unhandled) })
}
