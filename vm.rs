// SPDX-License-Identifier: GPL-2.0

//! A VM: its guest-physical memory (the memory slots userspace registers
//! with KVM_SET_USER_MEMORY_REGION, and the EPT built from them), and the
//! ids of its vCPUs. A VM belongs to the process that created it: its
//! memory is that process's memory.
//!
//! Lock order: a vCPU's run token (vcpu.rs) before `Vm::mem`.

use crate::ept::Ept;
use crate::uapi;
use kernel::sync::Arc;
use kernel::{new_mutex, prelude::*, rbtree::RBTree, sync::Mutex};

extern "C" {
    fn rvmx_glue_mm_grab_current() -> *mut core::ffi::c_void;
    fn rvmx_glue_mm_is_current(mm: *mut core::ffi::c_void) -> bool;
    fn rvmx_glue_mm_drop(mm: *mut core::ffi::c_void);
    fn rvmx_glue_access_ok(uaddr: u64, size: u64) -> bool;
    fn rvmx_glue_pin_user_page(uaddr: u64, write: bool, page: *mut *mut core::ffi::c_void) -> core::ffi::c_int;
    fn rvmx_glue_unpin_user_page(page: *mut core::ffi::c_void, dirty: bool);
    fn rvmx_glue_page_to_phys(page: *mut core::ffi::c_void) -> u64;
    fn rvmx_glue_copy_from_user(dst: *mut core::ffi::c_void, uaddr: u64, len: u64) -> core::ffi::c_int;
    fn rvmx_glue_copy_to_user(uaddr: u64, src: *const core::ffi::c_void, len: u64) -> core::ffi::c_int;
}

/// Memory slots per VM (KVM_CAP_NR_MEMSLOTS).
pub(crate) const MAX_SLOTS: u32 = 32;
/// vCPUs per VM (KVM_CAP_MAX_VCPUS; ids are below this too).
pub(crate) const MAX_VCPUS: u32 = 64;
const PAGE: u64 = 4096;
/// KVM's limit on a slot's size: 2^31 - 1 pages.
const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;

/// A reference on the creating process's `mm_struct` (mmgrab), so its
/// address identifies that process for as long as the VM lives.
struct MmRef(*mut core::ffi::c_void);
// SAFETY: an mm reference may be dropped from any thread.
unsafe impl Send for MmRef {}
// SAFETY: only compared by address.
unsafe impl Sync for MmRef {}
impl Drop for MmRef {
    fn drop(&mut self) {
        // SAFETY: paired with the mmgrab in `Vm::new`.
        unsafe { rvmx_glue_mm_drop(self.0) };
    }
}

/// One page of the launcher's memory, pinned while EPT maps it.
struct PinnedPage {
    page: *mut core::ffi::c_void,
    writable: bool,
}
// SAFETY: a pinned page may be unpinned from any thread.
unsafe impl Send for PinnedPage {}
impl Drop for PinnedPage {
    fn drop(&mut self) {
        // A writable page may have been written by the guest: mark it
        // dirty so that the kernel writes it back if it is file-backed.
        // SAFETY: `page` was pinned by `rvmx_glue_pin_user_page`.
        unsafe { rvmx_glue_unpin_user_page(self.page, self.writable) };
    }
}

/// A memory slot: guest-physical [gpa, gpa + size) backed by the launcher's
/// virtual memory at uaddr.
struct Slot {
    id: u32,
    gpa: u64,
    size: u64,
    uaddr: u64,
    readonly: bool,
    /// Pages mapped in EPT so far, by page index within the slot.
    pinned: RBTree<u64, PinnedPage>,
}

impl Slot {
    fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.size
    }
}

/// Guest memory: the slots and the EPT that maps them.
pub(crate) struct Memory {
    ept: Ept,
    slots: KVec<Slot>,
}

/// What an EPT violation at a GPA turned out to be.
pub(crate) enum Fault {
    /// Now mapped: run the guest again.
    Mapped,
    /// No memory there (or a write to read-only memory): emulate as MMIO.
    Mmio,
}

/// # Invariants
///
/// `eptp` is the EPT pointer of `mem.ept`, whose root never changes.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    mm: MmRef,
    eptp: u64,
    #[pin]
    mem: Mutex<Memory>,
    /// Ids of the vCPUs created so far.
    #[pin]
    vcpu_ids: Mutex<KVec<u32>>,
}

/// Invalidates, on every CPU, the cached EPT translations of one VM.
fn invept_everywhere(eptp: u64) {
    extern "C" fn one(info: *mut core::ffi::c_void) {
        // CAST: `info` carries the EPTP value, not a pointer.
        let _ = crate::hw::vmx::invept_single(info as u64);
    }
    // SAFETY: `one` runs INVEPT only, safe in IPI context.
    unsafe { crate::vmxon::on_each_cpu(one, eptp as *mut core::ffi::c_void) };
}

impl Vm {
    /// A new, empty VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let ept = Ept::new()?;
        let eptp = ept.eptp();
        // SAFETY: called from an ioctl, so `current->mm` is the caller's.
        let mm = MmRef(unsafe { rvmx_glue_mm_grab_current() });
        Arc::pin_init(
            pin_init!(Vm {
                mm,
                eptp,
                mem <- new_mutex!(Memory { ept, slots: KVec::new() }, "rvmx:vm.mem"),
                vcpu_ids <- new_mutex!(KVec::new(), "rvmx:vm.vcpu_ids"),
            }),
            GFP_KERNEL,
        )
    }

    /// Whether the caller is the process that created the VM (KVM answers
    /// EIO to any other: its memory is not this VM's memory).
    pub(crate) fn is_owner(&self) -> bool {
        // SAFETY: compares pointers only.
        unsafe { rvmx_glue_mm_is_current(self.mm.0) }
    }

    pub(crate) fn eptp(&self) -> u64 {
        self.eptp
    }

    /// Reserves a vCPU id (KVM_CREATE_VCPU).
    pub(crate) fn add_vcpu_id(&self, id: u32) -> Result {
        if id >= MAX_VCPUS {
            return Err(EINVAL);
        }
        let mut ids = self.vcpu_ids.lock();
        if ids.iter().any(|&i| i == id) {
            return Err(EEXIST);
        }
        ids.push(id, GFP_KERNEL)?;
        Ok(())
    }

    /// Whether any vCPU was created (and is alive).
    pub(crate) fn has_vcpus(&self) -> bool {
        !self.vcpu_ids.lock().is_empty()
    }

    /// Releases a vCPU id (the vCPU was freed, or its creation failed).
    pub(crate) fn remove_vcpu_id(&self, id: u32) {
        let mut ids = self.vcpu_ids.lock();
        if let Some(pos) = ids.iter().position(|&i| i == id) {
            crate::kpage::swap_remove(&mut ids, pos);
        }
    }

    /// KVM_SET_USER_MEMORY_REGION, with KVM's checks and errors.
    pub(crate) fn set_memory_region(&self, r: &uapi::kvm_userspace_memory_region) -> Result {
        let readonly = u64::from(r.flags) & u64::from(uapi::KVM_MEM_READONLY) != 0;
        // Dirty logging is not implemented yet: refuse rather than ignore.
        if r.flags & !uapi::KVM_MEM_READONLY != 0 {
            return Err(EINVAL);
        }
        if r.slot >= MAX_SLOTS {
            return Err(EINVAL);
        }
        if r.memory_size % PAGE != 0 || r.guest_phys_addr % PAGE != 0 || r.userspace_addr % PAGE != 0 {
            return Err(EINVAL);
        }
        if r.memory_size / PAGE > MAX_SLOT_PAGES
            || r.guest_phys_addr.checked_add(r.memory_size).is_none()
        {
            return Err(EINVAL);
        }
        // SAFETY: checks a range; dereferences nothing.
        if r.memory_size != 0 && !unsafe { rvmx_glue_access_ok(r.userspace_addr, r.memory_size) } {
            return Err(EINVAL);
        }

        let mut mem = self.mem.lock();
        let existing = mem.slots.iter().position(|s| s.id == r.slot);
        if r.memory_size == 0 {
            // Delete.
            let pos = existing.ok_or(EINVAL)?;
            let slot = crate::kpage::swap_remove(&mut mem.slots, pos);
            self.unmap_slot(&mut mem.ept, slot);
            return Ok(());
        }
        if let Some(pos) = existing {
            // KVM lets a slot move (new gpa) but not change size, backing or
            // the read-only flag.
            let s = &mem.slots[pos];
            if s.size != r.memory_size || s.uaddr != r.userspace_addr || s.readonly != readonly {
                return Err(EINVAL);
            }
            if s.gpa == r.guest_phys_addr {
                return Ok(());
            }
        }
        let end = r.guest_phys_addr + r.memory_size;
        if mem.slots.iter().any(|s| s.id != r.slot && r.guest_phys_addr < s.gpa + s.size && s.gpa < end) {
            return Err(EEXIST);
        }
        let new = Slot {
            id: r.slot,
            gpa: r.guest_phys_addr,
            size: r.memory_size,
            uaddr: r.userspace_addr,
            readonly,
            pinned: RBTree::new(),
        };
        mem.slots.push(new, GFP_KERNEL)?;
        if let Some(pos) = existing {
            // A move: the old placement goes away (and its mappings).
            let old = crate::kpage::swap_remove(&mut mem.slots, pos);
            self.unmap_slot(&mut mem.ept, old);
        }
        Ok(())
    }

    /// Removes a slot's pages from EPT, flushes every CPU's cached
    /// translations, then unpins the pages (in that order: no CPU may still
    /// reach a page once it is unpinned).
    fn unmap_slot(&self, ept: &mut Ept, slot: Slot) {
        for (&index, _) in slot.pinned.iter() {
            ept.unmap(slot.gpa + index * PAGE);
        }
        invept_everywhere(self.eptp);
        drop(slot);
    }

    /// Handles an EPT violation at `gpa` (outside the guest, may sleep): maps
    /// the page if a slot backs it, or says it is MMIO.
    pub(crate) fn fault_in(&self, gpa: u64, write: bool) -> Result<Fault> {
        let mut mem = self.mem.lock();
        let Memory { ept, slots } = &mut *mem;
        let Some(slot) = slots.iter_mut().find(|s| s.contains(gpa)) else {
            return Ok(Fault::Mmio);
        };
        if write && slot.readonly {
            return Ok(Fault::Mmio);
        }
        let index = (gpa - slot.gpa) / PAGE;
        let page_gpa = slot.gpa + index * PAGE;
        if slot.pinned.get(&index).is_some() {
            // Mapped already (another vCPU got here first).
            return Ok(Fault::Mapped);
        }
        let mut page = core::ptr::null_mut();
        // SAFETY: the caller is the VM's process (checked at every ioctl),
        // so `uaddr` is an address of the memory the slot was created with.
        kernel::error::to_result(unsafe {
            rvmx_glue_pin_user_page(slot.uaddr + index * PAGE, !slot.readonly, &mut page)
        })?;
        let pinned = PinnedPage { page, writable: !slot.readonly };
        // SAFETY: `page` is a pinned page.
        let hpa = unsafe { rvmx_glue_page_to_phys(page) };
        slot.pinned.try_create_and_insert(index, pinned, GFP_KERNEL)?;
        ept.map(page_gpa, hpa, !slot.readonly)?;
        Ok(Fault::Mapped)
    }

    /// Writes guest-physical memory (the data of a string IN). Fails with
    /// EFAULT where no slot backs `gpa` or the slot is read-only.
    pub(crate) fn write_guest(&self, mut gpa: u64, buf: &[u8]) -> Result {
        let mem = self.mem.lock();
        let mut done = 0;
        while done < buf.len() {
            let slot = mem.slots.iter().find(|s| s.contains(gpa) && !s.readonly).ok_or(EFAULT)?;
            let n = ((PAGE - gpa % PAGE) as usize).min(buf.len() - done);
            // SAFETY: `buf[done..done + n]` is valid for reads; the
            // destination is the VM process's memory (we run in it).
            kernel::error::to_result(unsafe {
                rvmx_glue_copy_to_user(slot.uaddr + (gpa - slot.gpa), buf[done..].as_ptr().cast(), n as u64)
            })?;
            done += n;
            gpa += n as u64;
        }
        Ok(())
    }

    /// Reads guest-physical memory (for decoding the instruction behind an
    /// MMIO exit). Fails with EFAULT where no slot backs `gpa`.
    pub(crate) fn read_guest(&self, mut gpa: u64, buf: &mut [u8]) -> Result {
        let mem = self.mem.lock();
        let mut done = 0;
        while done < buf.len() {
            let slot = mem.slots.iter().find(|s| s.contains(gpa)).ok_or(EFAULT)?;
            let in_page = (PAGE - gpa % PAGE) as usize;
            let n = in_page.min(buf.len() - done);
            // SAFETY: `buf[done..done + n]` is valid for writes; the source
            // is the VM process's memory (we run in it).
            kernel::error::to_result(unsafe {
                rvmx_glue_copy_from_user(buf[done..].as_mut_ptr().cast(), slot.uaddr + (gpa - slot.gpa), n as u64)
            })?;
            done += n;
            gpa += n as u64;
        }
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // No vCPU is left (each holds the VM), so no CPU runs this EPT; but
        // CPUs may still cache its translations, tagged by this EPTP, which
        // a future VM could reuse. Flush them before the tables and pages go.
        invept_everywhere(self.eptp);
    }
}
