// SPDX-License-Identifier: GPL-2.0

//! The guest's page walk, done in software: how a guest *linear* address
//! becomes a guest-*physical* one through the guest's own page tables, with
//! the checks the CPU makes on the way (present, reserved bits, R/W, U/S,
//! XD, CR0.WP, SMEP, SMAP) and the accessed and dirty bits it sets.
//!
//! rvmx needs it when it performs an access *for* the guest: the bytes of
//! the instruction behind an MMIO exit, the buffer of INS/OUTS. (The
//! guest's own accesses are translated by the CPU: with EPT the guest's page
//! tables are its own business.) A failed check is the #PF the CPU would
//! have raised, which the caller injects into the guest. A table outside
//! guest RAM is a not-present fault, as in KVM's walker; the same rule
//! turns the CPU's own walk that reached such a table (an EPT violation on
//! a paging-structure access) into the guest's #PF (exits/mmio.rs).
//!
//! Pure logic, `core` only: built into rvmx.ko (gmem.rs gives it guest
//! memory) and into `tests/unit`, where it runs over a fake memory and is
//! fuzzed. Every entry is guest data and may change between two reads; the
//! accessed/dirty updates are compare-and-exchange, and the walk starts
//! again (a bounded number of times) when an entry changed underneath.
//! SDM Vol. 3A, chapter 4.

use crate::addr::{Gpa, Linear};

/// Guest-physical memory, as the walk needs it.
pub(crate) trait GuestPhys {
    /// Reads the 4-byte (`wide` = false) or 8-byte entry at `gpa`; `None`
    /// when no guest RAM is there (page tables in MMIO).
    fn read_entry(&mut self, gpa: Gpa, wide: bool) -> Option<u64>;
    /// Replaces the entry at `gpa` by `new` if it still holds `old`:
    /// `Some(true)` when replaced, `Some(false)` when it had changed,
    /// `None` when it cannot be written.
    fn cmpxchg_entry(&mut self, gpa: Gpa, wide: bool, old: u64, new: u64) -> Option<bool>;
}

/// The paging mode: CR0.PG, CR4.PAE and EFER.LMA together.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Paging off: linear = physical.
    Off,
    /// 32-bit paging, 4-byte entries; `pse` (CR4.PSE) allows 4 MiB pages.
    Bits32 { pse: bool },
    /// PAE paging: the four PDPTEs the CPU loaded (VMX saves them in the
    /// VMCS on exit), then two levels of 8-byte entries.
    Pae { pdptes: [u64; 4] },
    /// 4-level paging (IA-32e mode).
    Long,
}

/// How the guest translates, as of one exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Paging {
    pub(crate) mode: Mode,
    pub(crate) cr3: u64,
    /// CR0.WP: supervisor writes honour R/W.
    pub(crate) wp: bool,
    /// EFER.NXE: bit 63 of an entry is XD (otherwise it is reserved).
    pub(crate) nxe: bool,
    /// CR4.SMEP and CR4.SMAP.
    pub(crate) smep: bool,
    pub(crate) smap: bool,
    /// Physical-address width: address bits at and above it are reserved.
    pub(crate) maxphyaddr: u8,
}

/// One access by linear address.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Access {
    pub(crate) write: bool,
    pub(crate) fetch: bool,
    /// A user-mode access (CPL 3 and not an implicit supervisor access).
    pub(crate) user: bool,
    /// RFLAGS.AC, which lifts SMAP for explicit supervisor accesses.
    pub(crate) ac: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WalkError {
    /// The CPU would raise #PF with this error code (CR2 = the address).
    PageFault(u32),
    /// An entry kept changing, or its accessed or dirty bit could not be
    /// set: not something the CPU would fault on; the caller gives up on
    /// emulation.
    Unhandled,
}

/// #PF error code bits (SDM Vol. 3A, §4.7).
pub(crate) mod pf {
    pub(crate) const PRESENT: u32 = 1 << 0;
    pub(crate) const WRITE: u32 = 1 << 1;
    pub(crate) const USER: u32 = 1 << 2;
    pub(crate) const RSVD: u32 = 1 << 3;
    pub(crate) const FETCH: u32 = 1 << 4;
}

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;
/// Bits 51:12 of an 8-byte entry: the next table or the page.
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// How often a walk restarts when entries change underneath it.
const RETRIES: usize = 4;

/// Whether a 64-bit linear address is canonical (bits 63:47 all equal, with
/// 48-bit linear addresses: rvmx refuses CR4.LA57). A non-canonical access
/// is #GP (or #SS), not #PF: the caller checks it first.
pub(crate) fn canonical(linear: Linear) -> bool {
    // CAST: sign-extension from bit 47.
    (((linear.0 << 16) as i64) >> 16) as u64 == linear.0
}

/// A data segment as the CPU's limit check sees it (outside 64-bit mode,
/// where limits apply): its limit and access rights as in the VMCS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub(crate) limit: u32,
    pub(crate) access_rights: u32,
}

/// How many of `count` elements of `size` bytes, the first at `offset` and
/// going up, lie within `seg`'s limit and below the address-size wrap
/// (`addr_mask`: 0xffff or 0xffff_ffff), as the CPU checks each one (SDM
/// Vol. 3A §5.3): `None` when the first element does not (the instruction
/// faults: #GP, or #SS for SS), otherwise at least 1. An unusable segment
/// (access rights bit 16) faults; an expand-down one (type bit 2) allows
/// offsets above the limit, up to 0xffff or, with its B bit, 0xffff_ffff.
pub(crate) fn segment_room(seg: Segment, addr_mask: u64, offset: u64, size: u64, count: u64) -> Option<u64> {
    if seg.access_rights & (1 << 16) != 0 || size == 0 {
        return None;
    }
    let limit = u64::from(seg.limit);
    let expand_down = seg.access_rights & (1 << 4) != 0 && seg.access_rights & (1 << 3) == 0 && seg.access_rights & (1 << 2) != 0;
    let (low, high) = if expand_down {
        let top = if seg.access_rights & (1 << 14) != 0 { 0xffff_ffff } else { 0xffff };
        (limit.saturating_add(1), top)
    } else {
        (0, limit)
    };
    let high = high.min(addr_mask);
    if offset < low || offset > high || high - offset < size - 1 {
        return None;
    }
    Some(((high - offset + 1) / size).min(count).max(1))
}

/// Whether a data access through a segment of these access rights is one
/// its type allows (SDM Vol. 3A §5.5 "Privilege levels" table 3-1 types,
/// §5.6 "Privilege level checking when accessing data segments" and the
/// checks of §5.4.1 for each access): a write needs a writable data segment
/// (type bit 3 clear, bit 1 set), a read a data segment or a readable code
/// segment (bit 1 set). Checked outside 64-bit mode only, as limits are. In
/// real mode (and virtual-8086 mode's cached types being data anyway), KVM's
/// emulator (`__linearize`, arch/x86/kvm/emulate.c) lets a write through a
/// readable code segment's cached type pass, and so does this. The access
/// that fails faults: #GP(0), #SS(0) through SS. What the CPU checks when
/// the selector is loaded (present, S bit, DPL) is not rechecked here.
pub(crate) fn segment_type_allows(access_rights: u32, write: bool, real_mode: bool) -> bool {
    let code = access_rights & (1 << 3) != 0;
    // Bit 1: writable (data) or readable (code).
    let rw = access_rights & (1 << 1) != 0;
    if write { rw && (!code || real_mode) } else { !code || rw }
}

/// One entry used by the walk: where it is and what it held.
#[derive(Clone, Copy)]
struct Used {
    gpa: Gpa,
    value: u64,
}

impl Paging {
    fn wide(&self) -> bool {
        !matches!(self.mode, Mode::Bits32 { .. })
    }

    /// Reserved bits of every 8-byte entry: address bits beyond
    /// MAXPHYADDR (up to bit 51), and XD without EFER.NXE.
    fn reserved(&self) -> u64 {
        let width = u32::from(self.maxphyaddr.clamp(32, 52));
        let addr_rsvd = ADDR & !((1u64 << width) - 1);
        addr_rsvd | if self.nxe { 0 } else { XD }
    }
}

/// Translates `linear` for `acc`. On success the accessed bits of the
/// entries used, and the dirty bit of the last one for a write, are set.
pub(crate) fn translate(mem: &mut impl GuestPhys, p: &Paging, linear: Linear, acc: Access) -> Result<Gpa, WalkError> {
    for _ in 0..RETRIES {
        let mut used = [Used { gpa: Gpa(0), value: 0 }; 4];
        let (gpa, n) = match walk(mem, p, linear, acc, &mut used)? {
            Some(r) => r,
            // Paging off: the linear address is the physical one.
            None => return Ok(Gpa(linear.0)),
        };
        if set_accessed_dirty(mem, p, &used[..n], acc.write)? {
            return Ok(gpa);
        }
    }
    Err(WalkError::Unhandled)
}

/// Sets A in every entry used and D in the last for a write. `Ok(false)`
/// when an entry changed since it was read (the walk must start again).
fn set_accessed_dirty(mem: &mut impl GuestPhys, p: &Paging, used: &[Used], write: bool) -> Result<bool, WalkError> {
    for (i, u) in used.iter().enumerate() {
        let mut want = u.value | ACCESSED;
        if write && i + 1 == used.len() {
            want |= DIRTY;
        }
        if want != u.value && !mem.cmpxchg_entry(u.gpa, p.wide(), u.value, want).ok_or(WalkError::Unhandled)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The walk itself: `Ok(None)` with paging off, else the guest-physical
/// address and how many entries of `used` were filled (outermost first).
fn walk(mem: &mut impl GuestPhys, p: &Paging, linear: Linear, acc: Access, used: &mut [Used; 4]) -> Result<Option<(Gpa, usize)>, WalkError> {
    let linear = linear.0;
    // Rights accumulated over the levels: writable and user only if every
    // level says so; execute-disabled if any level says so.
    let mut rw = true;
    let mut us = true;
    let mut xd = false;
    let mut n = 0usize;
    let fault = |bits: u32| {
        let mut code = bits;
        if acc.write {
            code |= pf::WRITE;
        }
        if acc.user {
            code |= pf::USER;
        }
        // I/D is reported for fetches when XD or SMEP could apply.
        if acc.fetch && (p.smep || (p.nxe && p.wide())) {
            code |= pf::FETCH;
        }
        WalkError::PageFault(code)
    };
    let wide = p.wide();
    // (table, first index shift, levels): where the walk starts.
    let (mut table, top_shift) = match p.mode {
        Mode::Off => return Ok(None),
        Mode::Long => (p.cr3 & ADDR, 39u32),
        Mode::Bits32 { .. } => (p.cr3 & 0xffff_f000, 22),
        Mode::Pae { pdptes } => {
            // CAST: two bits.
            let pdpte = pdptes[((linear >> 30) & 3) as usize];
            if pdpte & P == 0 {
                return Err(fault(0));
            }
            // Reserved PDPTE bits were checked when the CPU (or rvmx's
            // KVM_SET_SREGS and CR emulation) loaded them.
            (pdpte & ADDR, 21)
        }
    };
    let mut shift = top_shift;
    loop {
        let (index_mask, entry_size) = if wide { (0x1ff, 8) } else { (0x3ff, 4) };
        let gpa = Gpa(table + ((linear >> shift) & index_mask) * entry_size);
        // A table outside guest RAM (CR3 or an entry pointing past it): a
        // not-present fault, as KVM's walker reports it (paging_tmpl.h,
        // walk_addr_generic). (Bare metal would read whatever the bus
        // returns there; a guest cannot rely on either.)
        let Some(e) = mem.read_entry(gpa, wide) else { return Err(fault(0)) };
        // At most 4 levels (long mode); `get_mut` keeps a logic slip from
        // being an out-of-bounds index.
        *used.get_mut(n).ok_or(WalkError::Unhandled)? = Used { gpa, value: e };
        n += 1;
        if e & P == 0 {
            return Err(fault(0));
        }
        let large = e & PS != 0;
        let mut rsvd = if wide { p.reserved() } else { 0 };
        if p.mode == Mode::Long && shift == 39 {
            rsvd |= PS; // no pages at the PML4 level
        }
        if wide && large && shift == 30 {
            rsvd |= 0x3fff_e000; // 1 GiB page: bits 29:13
        }
        if wide && large && shift == 21 {
            rsvd |= 0x1f_e000; // 2 MiB page: bits 20:13
        }
        let pse_large = matches!(p.mode, Mode::Bits32 { pse: true }) && shift == 22 && large;
        if pse_large {
            rsvd |= 1 << 21; // 4 MiB page: bit 21
        }
        if e & rsvd != 0 {
            return Err(fault(pf::PRESENT | pf::RSVD));
        }
        rw &= e & RW != 0;
        us &= e & US != 0;
        xd |= p.nxe && wide && e & XD != 0;
        let leaf = shift == 12 || pse_large || (wide && large && (shift == 30 || shift == 21));
        if leaf {
            let page_mask = (1u64 << shift) - 1;
            let base = if pse_large {
                // PSE-36: bits 20:13 of the entry are address bits 39:32.
                (e & 0xffc0_0000) | (((e >> 13) & 0xff) << 32)
            } else if wide {
                e & ADDR & !page_mask
            } else {
                e & 0xffff_f000
            };
            check_rights(p, acc, rw, us, xd).map_err(|()| fault(pf::PRESENT))?;
            return Ok(Some((Gpa(base | (linear & page_mask)), n)));
        }
        table = if wide { e & ADDR } else { e & 0xffff_f000 };
        shift -= if wide { 9 } else { 10 };
    }
}

/// The protection checks once the page is found (SDM Vol. 3A, §4.6).
fn check_rights(p: &Paging, acc: Access, rw: bool, us: bool, xd: bool) -> Result<(), ()> {
    let ok = if acc.fetch {
        !xd && if acc.user { us } else { !(p.smep && us) }
    } else if acc.user {
        us && (!acc.write || rw)
    } else {
        // Supervisor data access: SMAP forbids user pages unless AC is set;
        // with CR0.WP clear, supervisor writes ignore R/W.
        (!p.smap || !us || acc.ac) && (!acc.write || rw || !p.wp)
    };
    if ok { Ok(()) } else { Err(()) }
}
