// SPDX-License-Identifier: GPL-2.0

//! `KernelPage`: one zeroed page with a kernel virtual address, for memory
//! that rvmx reads and writes through a pointer and also hands to the CPU
//! (EPT tables) or to userspace (the vCPU's run page). The kernel's `Page`
//! type maps pages only temporarily, which fits neither use.

use crate::addr::Hpa;
use crate::kglue::{rvmx_glue_alloc_zeroed_page, rvmx_glue_free_page, rvmx_glue_virt_to_phys};
use kernel::prelude::*;

/// An owned, zeroed, page-aligned 4 KiB page in the kernel's direct map.
///
/// # Invariants
///
/// `addr` came from `get_zeroed_page()` and is freed only by `Drop`.
pub(crate) struct KernelPage {
    addr: core::ptr::NonNull<u8>,
}

// SAFETY: a page is plain memory; access is synchronized by its owners.
unsafe impl Send for KernelPage {}
// SAFETY: as above; shared access goes through raw pointers.
unsafe impl Sync for KernelPage {}

impl KernelPage {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; returns null on failure.
        let p = unsafe { rvmx_glue_alloc_zeroed_page() };
        let addr = core::ptr::NonNull::new(p.cast()).ok_or(ENOMEM)?;
        Ok(Self { addr })
    }

    /// The page's kernel virtual address, as a pointer to `T`.
    pub(crate) fn as_ptr<T>(&self) -> *mut T {
        self.addr.as_ptr().cast()
    }

    /// Gives up ownership: the page is not freed until `from_raw`.
    pub(crate) fn into_raw(self) -> *mut u8 {
        let p = self.addr.as_ptr();
        core::mem::forget(self);
        p
    }

    /// Takes back a page `into_raw` gave up.
    ///
    /// # Safety
    ///
    /// `addr` came from `into_raw` and is taken back once.
    pub(crate) unsafe fn from_raw(addr: *mut u8) -> Self {
        // INVARIANT: `addr` came from `get_zeroed_page()` via `new`.
        // SAFETY: `into_raw` returned a non-null pointer (caller).
        Self { addr: unsafe { core::ptr::NonNull::new_unchecked(addr) } }
    }

    /// The page's physical address.
    pub(crate) fn phys(&self) -> Hpa {
        // SAFETY: `addr` is a direct-map address (type invariant).
        Hpa(unsafe { rvmx_glue_virt_to_phys(self.addr.as_ptr().cast()) })
    }
}

impl Drop for KernelPage {
    fn drop(&mut self) {
        // SAFETY: `addr` came from `get_zeroed_page()` (type invariant).
        unsafe { rvmx_glue_free_page(self.addr.as_ptr().cast()) };
    }
}

/// Removes and returns element `i` of `v`, moving the last element into
/// its place (6.12's `KVec` has no `swap_remove`).
pub(crate) fn swap_remove<T>(v: &mut KVec<T>, i: usize) -> T {
    let last = v.len() - 1;
    v.as_mut_slice().swap(i, last);
    // SAFETY: `last < len`; the element is read out exactly once and the
    // length is reduced right after, so it is never read or dropped again.
    let item = unsafe { v.as_ptr().add(last).read() };
    // SAFETY: `last < len` and the element at `last` was moved out above.
    unsafe { v.set_len(last) };
    item
}
