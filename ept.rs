// SPDX-License-Identifier: GPL-2.0

//! EPT, the extended page tables: the second level of address translation
//! that VMX adds. The guest's own page tables turn guest-virtual into
//! guest-physical addresses (GPAs); EPT turns GPAs into host-physical
//! addresses. An access to a GPA that EPT does not map (or maps without the
//! needed permission) is an *EPT violation* VM exit (exits/ept.rs). SDM Vol.
//! 3C §29.3.
//!
//! rvmx builds 4-level EPT with 4 KiB pages, filled lazily: a page is mapped
//! the first time the guest touches it (vm.rs faults the launcher's page in
//! and calls `map`). EPT is the only record of what is mapped: the MMU
//! notifier's invalidations and slot changes find the pages to unmap by
//! walking it (`for_each_mapped`, `unmap_range`). `map` and `unmap` run under the VM's memory lock, which
//! the MMU notifier takes from inside reclaim: they allocate nothing. The
//! tables `map` may need come from a `TableCache` filled before the lock.

use crate::addr::{Gpa, Hpa};
use crate::kglue::rvmx_glue_phys_to_virt;
use crate::kpage::KernelPage;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

// EPT entry bits (SDM Vol. 3C §29.3.2, tables 29-1 to 29-6).
const READ: u64 = 1 << 0;
pub(crate) const WRITE: u64 = 1 << 1;
const EXECUTE: u64 = 1 << 2;
/// Leaf memory type write-back (bits 5:3 = 6).
const MEMTYPE_WB: u64 = 6 << 3;
/// Ignore the guest's PAT: guest RAM is always write-back.
const IGNORE_PAT: u64 = 1 << 6;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A 4-level EPT hierarchy.
///
/// # Invariants
///
/// Every present non-leaf entry points at a table page that the `Ept` owns
/// (taken from a `TableCache` with `KernelPage::into_raw`), freed by `Drop`
/// and by nothing else.
pub(crate) struct Ept {
    root: KernelPage,
    /// The paging-structure pages, the root included: counted as they are
    /// added (`leaf`), for the VM's statistics; none is freed before `Drop`.
    tables: u64,
}

/// Pages for the tables one `Ept::map` may add (at most one per level
/// below the root), allocated before the memory lock is taken (vm.rs).
pub(crate) struct TableCache {
    pages: [Option<KernelPage>; 3],
}

impl TableCache {
    pub(crate) const fn new() -> Self {
        Self { pages: [None, None, None] }
    }

    /// Fills the cache; allocates only what the last `map` used.
    pub(crate) fn top_up(&mut self) -> Result {
        for p in self.pages.iter_mut().filter(|p| p.is_none()) {
            *p = Some(KernelPage::new()?);
        }
        Ok(())
    }

    fn take(&mut self) -> Option<KernelPage> {
        self.pages.iter_mut().find_map(|p| p.take())
    }
}

/// The entry `index` of the table at `table` (a kernel address).
fn entry<'a>(table: *mut u64, index: usize) -> &'a AtomicU64 {
    // SAFETY: `table` is a live, page-aligned 512-entry table owned by the
    // `Ept` (its invariant) and `index < 512`; entries are only accessed
    // atomically, since the CPU may walk them at any time.
    unsafe { AtomicU64::from_ptr(table.add(index)) }
}

fn index(gpa: Gpa, level: u32) -> usize {
    // CAST: 9 bits.
    ((gpa.0 >> (12 + 9 * level)) & 0x1ff) as usize
}

impl Ept {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { root: KernelPage::new()?, tables: 1 })
    }

    /// The EPT pointer for the VMCS: root, 4-level walk, write-back paging
    /// structures (SDM §25.6.11).
    pub(crate) fn eptp(&self) -> u64 {
        self.root.phys().0 | (3 << 3) | 6
    }

    /// The leaf entry for `gpa`, creating the tables on the way from
    /// `cache` if one is given; `None` if a table is missing.
    fn leaf(&mut self, gpa: Gpa, mut cache: Option<&mut TableCache>) -> Option<&AtomicU64> {
        let mut table: *mut u64 = self.root.as_ptr();
        for level in (1..4).rev() {
            let e = entry(table, index(gpa, level));
            let mut v = e.load(Ordering::Acquire);
            if v & READ == 0 {
                let t = cache.as_mut()?.take()?;
                v = t.phys().0 | READ | WRITE | EXECUTE;
                // INVARIANT: the page is ours from now on, freed by `Drop`.
                let _ = t.into_raw();
                e.store(v, Ordering::Release);
                self.tables += 1;
            }
            // SAFETY: `v` points at one of our tables (type invariant).
            table = unsafe { rvmx_glue_phys_to_virt(v & ADDR_MASK) }.cast();
        }
        Some(entry(table, index(gpa, 0)))
    }

    /// Maps the 4 KiB guest page at `gpa` to host page `hpa`, with missing
    /// tables from `cache` (ENOMEM if it runs out: top it up first).
    pub(crate) fn map(&mut self, gpa: Gpa, hpa: Hpa, writable: bool, cache: &mut TableCache) -> Result {
        let w = if writable { WRITE } else { 0 };
        let e = self.leaf(gpa, Some(cache)).ok_or(ENOMEM)?;
        e.store((hpa.0 & ADDR_MASK) | READ | w | EXECUTE | MEMTYPE_WB | IGNORE_PAT, Ordering::Release);
        Ok(())
    }

    /// The leaf entry for `gpa` if its tables exist (no allocation).
    fn existing_leaf(&self, gpa: Gpa) -> Option<&AtomicU64> {
        let mut table: *mut u64 = self.root.as_ptr();
        for level in (1..4).rev() {
            let v = entry(table, index(gpa, level)).load(Ordering::Acquire);
            if v & READ == 0 {
                return None;
            }
            // SAFETY: `v` points at one of our tables (type invariant).
            table = unsafe { rvmx_glue_phys_to_virt(v & ADDR_MASK) }.cast();
        }
        Some(entry(table, index(gpa, 0)))
    }

    /// Whether the guest page at `gpa` is mapped. EPT is the only record
    /// of which guest pages are mapped (vm.rs keeps nothing per page).
    pub(crate) fn is_mapped(&self, gpa: Gpa) -> bool {
        self.existing_leaf(gpa).is_some_and(|e| e.load(Ordering::Acquire) & READ != 0)
    }

    /// Gives or takes away write permission for the mapped page at `gpa`
    /// (dirty logging, vm.rs). Taking it away needs an INVEPT afterwards,
    /// as unmapping does; giving it back needs none: the EPT violation that
    /// led here already dropped the CPU's cached translation (SDM Vol. 3C
    /// §29.4.3.1). Returns the page's mapping as it was, if it was mapped.
    pub(crate) fn set_writable(&mut self, gpa: Gpa, writable: bool) -> Option<Mapping> {
        let e = self.existing_leaf(gpa)?;
        let v = e.load(Ordering::Acquire);
        if v & READ == 0 {
            return None;
        }
        e.store(if writable { v | WRITE } else { v & !WRITE }, Ordering::Release);
        Some(Mapping::of(v))
    }

    /// Calls `f` with the guest-physical address and entry of every mapped
    /// page in [start, end), visiting only the tables that exist: the cost
    /// follows what is mapped, not the size of the range.
    pub(crate) fn for_each_mapped(&mut self, start: Gpa, end: Gpa, mut f: impl FnMut(Gpa, &AtomicU64)) {
        // Nothing is mapped at or above 2^48 (4-level EPT; vm.rs's slots
        // end below it).
        let end = end.0.min(1 << 48);
        walk(self.root.as_ptr(), 3, 0, start.0, end, &mut f);
    }

    /// Unmaps every page in [start, end); `f` hears of each mapping removed.
    /// The caller must then invalidate the CPUs' cached translations
    /// (INVEPT) before the host pages may be reused. Returns how many.
    pub(crate) fn unmap_range(&mut self, start: Gpa, end: Gpa, mut f: impl FnMut(Mapping)) -> u64 {
        let mut n = 0;
        self.for_each_mapped(start, end, |_, e| {
            f(Mapping::of(e.swap(0, Ordering::AcqRel)));
            n += 1;
        });
        n
    }
}

/// A guest page's mapping as an EPT leaf entry held it.
#[derive(Clone, Copy)]
pub(crate) struct Mapping {
    pub(crate) hpa: Hpa,
    pub(crate) writable: bool,
}

impl Mapping {
    pub(crate) fn of(v: u64) -> Self {
        Mapping { hpa: Hpa(v & ADDR_MASK), writable: v & WRITE != 0 }
    }
}

/// The mapped leaves of the table at `table` (`level`: 3 for the root,
/// 0 for a page table), which maps guest-physical addresses from `base`,
/// that fall in [start, end).
fn walk(table: *mut u64, level: u32, base: u64, start: u64, end: u64, f: &mut impl FnMut(Gpa, &AtomicU64)) {
    // Bytes one entry of this level maps: 4 KiB at level 0 ... 512 GiB at 3.
    let span = 1u64 << (12 + 9 * level);
    // CAST: below 512 (start - base < 512 * span).
    let first = if start > base { ((start - base) / span) as usize } else { 0 };
    for i in first..512 {
        // CAST: i < 512; base + 512 * span <= 2^48.
        let gpa = base + i as u64 * span;
        if gpa >= end {
            break;
        }
        let e = entry(table, i);
        let v = e.load(Ordering::Acquire);
        if v & READ == 0 {
            continue;
        }
        if level == 0 {
            f(Gpa(gpa), e);
        } else {
            // SAFETY: a present non-leaf entry points at one of our tables
            // (type invariant of `Ept`).
            let child: *mut u64 = unsafe { rvmx_glue_phys_to_virt(v & ADDR_MASK) }.cast();
            walk(child, level - 1, gpa, start, end, f);
        }
    }
}

/// Frees the tables below `table` at `level` (3: the root's children).
fn free_tables(table: *mut u64, level: u32) {
    if level == 0 {
        return;
    }
    for i in 0..512 {
        let v = entry(table, i).load(Ordering::Acquire);
        if v & READ != 0 {
            // SAFETY: a present non-leaf entry points at a table we own
            // (type invariant of `Ept`).
            let child: *mut u64 = unsafe { rvmx_glue_phys_to_virt(v & ADDR_MASK) }.cast();
            free_tables(child, level - 1);
            // SAFETY: from `KernelPage::into_raw` (type invariant), and no
            // entry points at it any more: the whole tree goes.
            drop(unsafe { KernelPage::from_raw(child.cast()) });
        }
    }
}

impl Ept {
    /// The paging-structure pages of this EPT, the root included (for the
    /// VM's statistics; a running count, no walk).
    pub(crate) fn tables(&self) -> u64 {
        self.tables
    }
}

impl Drop for Ept {
    fn drop(&mut self) {
        free_tables(self.root.as_ptr(), 3);
    }
}
