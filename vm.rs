// SPDX-License-Identifier: GPL-2.0

//! A VM: its guest-physical memory (the memory slots userspace registers
//! with KVM_SET_USER_MEMORY_REGION, and the EPT built from them, with dirty
//! logging), and the ids of its vCPUs. A VM belongs to the process that created it: its
//! memory is that process's memory.
//!
//! Lock order: a vCPU's run token (vcpu/mod.rs) before `Vm::mem`. The MMU
//! notifier takes `Vm::mem` with the VMM's mmap_lock held, from inside
//! memory reclaim, and from the OOM reaper, which must not sleep: so
//! `Vm::mem` is a spinlock (as KVM's mmu_lock), and nothing under it
//! sleeps, allocates memory that could reclaim, touches user memory, faults
//! pages in or takes a folio lock.
//!
//! Guest pages are not pinned (as in KVM): a fault takes a reference on
//! the VMM's page only while it maps it (`Vm::fault_in`), and the MMU
//! notifier unmaps a page from EPT, and flushes, before the kernel may
//! free, swap, migrate or merge it. EPT is the only per-page state.

use crate::kglue::{self,
    rvmx_glue_access_ok, rvmx_glue_cmpxchg_user, rvmx_glue_get_user_page, rvmx_glue_mm_drop,
    rvmx_glue_mm_grab_current, rvmx_glue_mm_is_current, rvmx_glue_mmu_interval_set_seq,
    rvmx_glue_page_to_phys, rvmx_glue_release_page, rvmx_glue_set_pfn_dirty,
    rvmx_glue_slot_notifier_free, rvmx_glue_slot_notifier_new, rvmx_glue_slot_notifier_read_begin,
    rvmx_glue_slot_notifier_read_retry,
};
use crate::addr::{Gpa, Hpa};
use crate::ept::{Ept, Mapping, TableCache};
use crate::uapi;
use crate::kglue::rvmx_glue_kick_cpus;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::sync::Arc;
use kernel::sync::{Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock, prelude::*, uaccess::UserSlice};

/// Memory slots per VM (KVM_CAP_NR_MEMSLOTS).
pub(crate) const MAX_SLOTS: u32 = 32;
/// vCPUs per VM (KVM_CAP_MAX_VCPUS; ids are below this too).
pub(crate) const MAX_VCPUS: u32 = 64;
const PAGE: u64 = 4096;
/// KVM's limit on a slot's size: 2^31 - 1 pages.
const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;

/// A reference on the creating process's `mm_struct` (mmgrab), so its
/// address identifies that process for as long as the VM lives.
struct MmRef(*mut kglue::mm_struct);
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

/// A reference on one page of the launcher's memory, held while a fault
/// maps it in EPT and dropped right after (KVM's kvm_release_faultin_page):
/// from then on the MMU notifier, not a pin, keeps the mapping coherent.
///
/// # Invariants
///
/// `page` holds a reference taken by `rvmx_glue_get_user_page`, dropped
/// by `Drop` only.
struct PageRef {
    page: *mut kglue::page,
    /// Mapped writable in EPT: the guest may write it behind the VMM's page
    /// tables, so it is marked dirty when the reference goes.
    dirty: bool,
}

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: type invariant.
        unsafe { rvmx_glue_release_page(self.page, self.dirty) };
    }
}

/// A writable mapping that goes away may have been written by the guest:
/// the page is marked dirty (kglue/memory.c, as KVM's kvm_set_pfn_dirty).
fn mapping_gone(m: Mapping) {
    if m.writable {
        // SAFETY: EPT maps only pages the VMM maps (the MMU notifier unmaps
        // them first), so the page is live; takes no lock, never sleeps.
        unsafe { rvmx_glue_set_pfn_dirty(m.hpa.0) };
    }
}

/// A slot's MMU interval notifier (kglue/memory.c): tells rvmx when the VMM's
/// mapping of the slot's memory changes. Shared (`Arc`) between the slot
/// and a fault in progress, which reads its sequence count without the
/// memory lock; removed when the last holder lets go, which may sleep
/// (waiting for a callback that is running), so never under the lock.
///
/// # Invariants
///
/// `ptr` is a registered `struct rvmx_slot_notifier`, freed only by Drop.
struct SlotNotifier {
    ptr: *mut kglue::rvmx_slot_notifier,
}
// SAFETY: the notifier's C functions may be called from any thread.
unsafe impl Send for SlotNotifier {}
// SAFETY: as above; the struct is read-only for Rust.
unsafe impl Sync for SlotNotifier {}

impl SlotNotifier {
    /// Watches [uaddr, uaddr + size) of the calling process for `vm`.
    fn new(vm: &Vm, uaddr: u64, size: u64) -> Result<Arc<Self>> {
        let mut err = 0;
        // SAFETY: `vm` outlives its slots' notifiers (`Vm`'s drop removes
        // them first); the range was checked with access_ok.
        let ptr = unsafe { rvmx_glue_slot_notifier_new((vm as *const Vm).cast(), uaddr, size, &mut err) };
        if ptr.is_null() {
            return Err(Error::from_errno(err));
        }
        // On failure the value is dropped, which removes the notifier.
        Ok(Arc::new(Self { ptr }, GFP_KERNEL_ACCOUNT)?)
    }

    /// The sequence count a fault reads before faulting the page in (may sleep while an
    /// invalidation of the range is running).
    fn read_begin(&self) -> core::ffi::c_ulong {
        // SAFETY: type invariant.
        unsafe { rvmx_glue_slot_notifier_read_begin(self.ptr) }
    }

    /// Whether an invalidation ran since `read_begin` returned `seq`. Must
    /// be asked under the memory lock, which invalidations take.
    fn changed_since(&self, seq: core::ffi::c_ulong) -> bool {
        // SAFETY: type invariant.
        unsafe { rvmx_glue_slot_notifier_read_retry(self.ptr, seq) }
    }
}

impl Drop for SlotNotifier {
    fn drop(&mut self) {
        // SAFETY: type invariant; no lock of ours is held (see above).
        unsafe { rvmx_glue_slot_notifier_free(self.ptr) };
    }
}

/// A memory slot: guest-physical [gpa, gpa + size) backed by the launcher's
/// virtual memory at uaddr.
struct Slot {
    id: u32,
    /// Unique within the VM: a slot that is deleted, moved or re-created
    /// gets a new one, so that a page faulted in for the old slot without
    /// the memory lock held (`Vm::fault_in`) is never mapped into the new one.
    serial: u64,
    gpa: Gpa,
    size: u64,
    uaddr: u64,
    readonly: bool,
    /// Watches the VMM's mapping of [uaddr, uaddr + size); `None` only
    /// while the VM is being destroyed.
    notifier: Option<Arc<SlotNotifier>>,
    /// With KVM_MEM_LOG_DIRTY_PAGES: one bit per page of the slot, set when
    /// the guest (or rvmx for it) wrote the page since the last
    /// KVM_GET_DIRTY_LOG.
    dirty: Option<KVVec<u64>>,
}

impl Slot {
    fn contains(&self, gpa: Gpa) -> bool {
        gpa >= self.gpa && gpa.0 - self.gpa.0 < self.size
    }

    /// The index within the slot of the page that holds `gpa` (which the
    /// slot contains).
    fn index_of(&self, gpa: Gpa) -> u64 {
        (gpa.0 - self.gpa.0) / PAGE
    }

    /// The guest-physical address of the slot's page `index`.
    fn page_gpa(&self, index: u64) -> Gpa {
        Gpa(self.gpa.0 + index * PAGE)
    }

    fn pages(&self) -> u64 {
        self.size / PAGE
    }

    /// The end of the slot's guest-physical range (no slot reaches 2^64:
    /// checked at creation).
    fn end(&self) -> Gpa {
        Gpa(self.gpa.0 + self.size)
    }

    fn mark_dirty(&mut self, index: u64) {
        if let Some(bits) = &mut self.dirty {
            // CAST: `index` < pages, and the bitmap has a bit per page.
            bits[(index / 64) as usize] |= 1 << (index % 64);
        }
    }
}

/// A cleared dirty bitmap for `pages` pages (64 per word, as KVM sizes it).
/// Up to 256 MiB for the largest slot, so kvmalloc (vmalloc when large),
/// and a failure is ENOMEM for the caller, not a warning in the log.
fn new_bitmap(pages: u64) -> Result<KVVec<u64>> {
    // CAST: a slot has at most 2^31 pages, so at most 2^25 words.
    let words = pages.div_ceil(64) as usize;
    Ok(KVVec::from_elem(0, words, GFP_KERNEL_ACCOUNT | kernel::alloc::flags::__GFP_NOWARN)?)
}

/// Guest memory: the slots and the EPT that maps them.
pub(crate) struct Memory {
    ept: Ept,
    slots: KVec<Slot>,
    /// The serial number the next slot gets (`Slot::serial`).
    next_serial: u64,
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
/// `in_guest` has an entry for every possible CPU number (nr_cpu_ids).
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    mm: MmRef,
    eptp: u64,
    #[pin]
    mem: SpinLock<Memory>,
    /// Ids of the vCPUs created so far.
    #[pin]
    vcpu_ids: Mutex<KVec<u32>>,
    /// The EPT flush generation: bumped (under `mem`) each time a
    /// translation is taken away or narrowed. A vCPU that last flushed at
    /// an older one flushes (INVEPT single-context) before its next VM
    /// entry, as KVM's KVM_REQ_TLB_FLUSH (see `RemoteFlush`).
    ept_gen: AtomicU64,
    /// The highest generation for which a `RemoteFlush` wait has completed
    /// (every CPU that was in the guest then has left it since).
    flushed_gen: AtomicU64,
    /// By CPU number: whether a vCPU of this VM is between the check of
    /// `ept_gen` before a VM entry and the VM exit after it (`InGuest`).
    /// As KVM's vcpu->mode == IN_GUEST_MODE: only those CPUs get an IPI.
    in_guest: KVec<AtomicBool>,
    /// Running figures for KVM_GET_STATS_FD, changed under `mem` where
    /// pages are mapped and unmapped, tables added and slots made or
    /// deleted, and read without it: a read walks nothing (as KVM's stats).
    counts: VmCounts,
}

/// See `Vm::counts`.
struct VmCounts {
    pages_4k: AtomicU64,
    ept_tables: AtomicU64,
    memory_slots: AtomicU64,
}

/// A vCPU id reserved in its VM (`Vm::reserve_vcpu_id`), released when
/// this is dropped: with the vCPU that holds it, once nothing refers to it
/// any more (its fd, its statistics fd, an ioctl in progress), or when the
/// vCPU's creation fails. Never at the close of one fd while another
/// still reaches the vCPU: two live vCPUs never share an id, and no more
/// than MAX_VCPUS exist.
pub(crate) struct VcpuId {
    vm: Arc<Vm>,
    id: u32,
}

impl VcpuId {
    pub(crate) fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    pub(crate) fn get(&self) -> u32 {
        self.id
    }
}

impl Drop for VcpuId {
    fn drop(&mut self) {
        self.vm.remove_vcpu_id(self.id);
    }
}

/// An EPT flush of one VM, requested under the memory lock and waited for
/// after it (as KVM's kvm_flush_remote_tlbs, without its wait under a
/// spinlock).
///
/// Why no CPU uses a stale translation once `wait` returns, which is what
/// makes it safe to let the kernel free or reuse a page EPT no longer
/// maps (the MMU notifier returns only then), or to copy out a dirty bitmap whose pages were write-protected:
///
/// - EPT translations are used only in VMX non-root operation, tagged by
///   the EPTP's root (EP4TA): a CPU outside this VM's guests cannot use
///   them, whatever it caches.
/// - Before every VM entry a vCPU marks its CPU in `Vm::in_guest` (an
///   atomic swap, a full barrier) and then reads `ept_gen`; if the
///   generation moved since it last flushed, or it arrives on a CPU other
///   than the one it last ran on, it runs INVEPT single-context first
///   (vcpu/run.rs). The flusher bumps `ept_gen` (SeqCst) after changing the
///   tables, then reads `in_guest`. Either the flusher sees the CPU marked,
///   and waits for it, or the vCPU sees the new generation and flushes
///   before it enters: never neither (the two orders are both sequentially
///   consistent).
/// - `wait` interrupts every CPU marked, and returns once each has taken
///   the interrupt, which a CPU in the guest does only after the VM exit
///   it causes: by then it has left the guest, and it flushes before it
///   enters again (the generation moved). Only CPUs running this VM's
///   vCPUs are asked, and without `Vm::mem` held: a CPU that does not
///   answer (a wedged guest) stalls this VM's flush alone, never the
///   memory lock and, through it, every vCPU, the MMU notifier and the
///   host's reclaim.
/// - CPUs that ran a vCPU earlier keep stale translations, unused: any
///   vCPU of this VM entering there flushes first (a new generation, or a
///   CPU it did not last run on), and a later VM whose EPT root is the same
///   page (the same tag) has only new vCPUs, which flush on their first
///   entry on each CPU. So a VM's end needs no flush either (`Vm`'s drop).
///
/// Declared before the memory lock's guard and after whatever must outlive
/// the stale translations (a slot whose notifier keeps its pages), so that
/// it is dropped after the lock and before them; its drop waits.
///
/// Another thread's flush may still be under way when this one takes the
/// lock: the EPT entries it removed are gone, but CPUs may still use them
/// until its wait is over. An MMU notifier invalidation that found nothing
/// left to unmap must not return before that wait either, or the kernel
/// frees pages a CPU can still reach (`catch_up`). `Vm::flushed_gen` says
/// up to which generation a wait has been completed.
struct RemoteFlush<'a> {
    vm: &'a Vm,
    /// The generation this flush must see completed, if any.
    target: Option<u64>,
}

impl<'a> RemoteFlush<'a> {
    fn new(vm: &'a Vm) -> Self {
        Self { vm, target: None }
    }

    /// Asks every vCPU to flush before its next entry. Called under the
    /// memory lock, after the EPT change.
    fn request(&mut self) {
        self.target = Some(self.vm.ept_gen.fetch_add(1, Ordering::SeqCst) + 1);
    }

    /// Under the memory lock: makes this flush's wait cover the flushes
    /// other threads requested before, which may not be over yet.
    fn catch_up(&mut self) {
        let gen = self.vm.ept_gen.load(Ordering::SeqCst);
        if gen > self.vm.flushed_gen.load(Ordering::Acquire) {
            self.target = Some(self.target.map_or(gen, |t| t.max(gen)));
        }
    }

    /// Interrupts the CPUs now in one of this VM's guests and waits until
    /// each has left it, unless a wait that started after the generation
    /// this flush needs has completed already. Must not be called under
    /// the memory lock.
    fn wait(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        if self.vm.flushed_gen.load(Ordering::Acquire) >= target {
            return;
        }
        extern "C" fn in_guest(cpu: core::ffi::c_int, info: *mut core::ffi::c_void) -> bool {
            // SAFETY: `info` is the `Vm` of the `RemoteFlush` waiting below.
            let vm = unsafe { &*info.cast::<Vm>() };
            // CAST: a CPU number from the kernel, never negative.
            vm.in_guest.get(cpu as usize).is_some_and(|f| f.load(Ordering::SeqCst))
        }
        // SAFETY: `in_guest` reads an atomic of the VM, which outlives the
        // call (we borrow it); the IPI function does nothing. No lock of
        // ours is held (see the type's comment).
        unsafe { rvmx_glue_kick_cpus(Some(in_guest), (self.vm as *const Vm).cast_mut().cast()) };
        // Every generation up to `target` was bumped before this kick (it
        // was read or made under the lock, and the kick came after it).
        self.vm.flushed_gen.fetch_max(target, Ordering::AcqRel);
    }
}

impl Drop for RemoteFlush<'_> {
    fn drop(&mut self) {
        self.wait();
    }
}

/// This CPU is in (or about to enter) one of the VM's guests; dropped
/// right after the VM exit (see `RemoteFlush`).
pub(crate) struct InGuest<'a> {
    flag: &'a AtomicBool,
    gen: u64,
}

impl InGuest<'_> {
    /// The flush generation at the time of marking: the vCPU must have
    /// flushed at this one before it enters.
    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }
}

impl Drop for InGuest<'_> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

impl Vm {
    /// A new, empty VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let ept = Ept::new()?;
        let eptp = ept.eptp();
        // Room for every slot now, so that adding one under the memory lock
        // never allocates (see `set_memory_region`).
        let slots = KVec::with_capacity(MAX_SLOTS as usize, GFP_KERNEL_ACCOUNT)?;
        // SAFETY: a plain read of a boot-time constant.
        let cpus = unsafe { kglue::rvmx_glue_nr_cpu_ids() } as usize;
        let mut in_guest = KVec::with_capacity(cpus, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..cpus {
            in_guest.push(AtomicBool::new(false), GFP_KERNEL_ACCOUNT)?;
        }
        // SAFETY: called from an ioctl, so `current->mm` is the caller's.
        let mm = MmRef(unsafe { rvmx_glue_mm_grab_current() });
        // INVARIANT: one `in_guest` entry per possible CPU number.
        Arc::pin_init(
            pin_init!(Vm {
                mm,
                eptp,
                mem <- new_spinlock!(Memory { ept, slots, next_serial: 0 }, "rvmx:vm.mem"),
                vcpu_ids <- new_mutex!(KVec::new(), "rvmx:vm.vcpu_ids"),
                ept_gen: AtomicU64::new(0),
                flushed_gen: AtomicU64::new(0),
                in_guest,
                counts: VmCounts {
                    pages_4k: AtomicU64::new(0),
                    ept_tables: AtomicU64::new(1),
                    memory_slots: AtomicU64::new(0),
                },
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The VM's statistics (KVM_GET_STATS_FD): the running counts, read
    /// without the memory lock.
    pub(crate) fn stats(&self) -> crate::stats::VmStats {
        let c = &self.counts;
        crate::stats::VmStats {
            pages_4k: c.pages_4k.load(Ordering::Relaxed),
            ept_tables: c.ept_tables.load(Ordering::Relaxed),
            memory_slots: c.memory_slots.load(Ordering::Relaxed),
        }
    }

    /// Publishes the slot count after a change (under the memory lock).
    fn count_slots(&self, mem: &Memory) {
        // CAST: at most MAX_SLOTS.
        self.counts.memory_slots.store(mem.slots.len() as u64, Ordering::Relaxed);
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

    /// Marks CPU `cpu` (the caller's, with interrupts off) as about to enter
    /// one of this VM's guests, until the value is dropped after the VM
    /// exit; `None` for a CPU number beyond nr_cpu_ids (never). The caller
    /// must flush (INVEPT) before the entry unless it already did at the
    /// generation this returns (see `RemoteFlush`).
    pub(crate) fn enter_guest(&self, cpu: u32) -> Option<InGuest<'_>> {
        let flag = self.in_guest.get(cpu as usize)?;
        // A full barrier between the mark and the read of the generation.
        flag.swap(true, Ordering::SeqCst);
        Some(InGuest { flag, gen: self.ept_gen.load(Ordering::SeqCst) })
    }

    /// Reserves a vCPU id (KVM_CREATE_VCPU), with KVM's errors and in
    /// its order (kvm_vm_ioctl_create_vcpu): an id of MAX_VCPUS (the
    /// KVM_CAP_MAX_VCPU_ID rvmx reports) or more, or MAX_VCPUS vCPUs
    /// alive already, is EINVAL; an id a live vCPU has, EEXIST. The id is
    /// the vCPU's until the reservation is dropped (`VcpuId`).
    pub(crate) fn reserve_vcpu_id(self: &Arc<Self>, id: u32) -> Result<VcpuId> {
        if id >= MAX_VCPUS {
            return Err(EINVAL);
        }
        let mut ids = self.vcpu_ids.lock();
        // CAST: at most MAX_VCPUS ids.
        if ids.len() as u32 >= MAX_VCPUS {
            return Err(EINVAL);
        }
        if ids.contains(&id) {
            return Err(EEXIST);
        }
        ids.push(id, GFP_KERNEL_ACCOUNT)?;
        Ok(VcpuId { vm: self.clone(), id })
    }

    /// Whether any vCPU was created (and is alive).
    pub(crate) fn has_vcpus(&self) -> bool {
        !self.vcpu_ids.lock().is_empty()
    }

    /// Releases a vCPU id (`VcpuId`'s drop).
    fn remove_vcpu_id(&self, id: u32) {
        let mut ids = self.vcpu_ids.lock();
        if let Some(pos) = ids.iter().position(|&i| i == id) {
            crate::kpage::swap_remove(&mut ids, pos);
        }
    }

    /// KVM_SET_USER_MEMORY_REGION, with KVM's checks and errors.
    pub(crate) fn set_memory_region(&self, r: &uapi::kvm_userspace_memory_region) -> Result {
        let readonly = r.flags & uapi::KVM_MEM_READONLY != 0;
        let log_dirty = r.flags & uapi::KVM_MEM_LOG_DIRTY_PAGES != 0;
        if r.flags & !(uapi::KVM_MEM_READONLY | uapi::KVM_MEM_LOG_DIRTY_PAGES) != 0 {
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
        // Guest-physical addresses end at the CPU's physical-address width
        // (CPUID 0x80000008:EAX[7:0]), as KVM checks: the guest cannot reach
        // beyond it, and EPT's four levels would alias addresses above it.
        let maxphy = crate::hw::cpuid(0x8000_0008, 0)[0] & 0xff;
        if r.memory_size != 0 && r.guest_phys_addr + r.memory_size > 1u64 << maxphy.min(48) {
            return Err(EINVAL);
        }
        // SAFETY: checks a range; dereferences nothing.
        if r.memory_size != 0 && !unsafe { rvmx_glue_access_ok(r.userspace_addr, r.memory_size) } {
            return Err(EINVAL);
        }

        // Whatever can allocate or sleep is done before the memory lock
        // (the MMU notifier takes it from inside reclaim): the new slot's
        // notifier and dirty bitmap, used or dropped after the lock.
        let (mut notifier, mut bitmap) = (None, None);
        if r.memory_size != 0 {
            notifier = Some(SlotNotifier::new(self, r.userspace_addr, r.memory_size)?);
            if log_dirty {
                bitmap = Some(new_bitmap(r.memory_size / PAGE)?);
            }
        }
        // A slot that goes away: dropped (its notifier removed) after the
        // lock and the flush, being declared before them.
        let mut gone: Option<Slot> = None;
        // Waited for after the lock, before `gone` is dropped.
        let mut flush = RemoteFlush::new(self);
        let mut mem = self.mem.lock();
        let existing = mem.slots.iter().position(|s| s.id == r.slot);
        if r.memory_size == 0 {
            // Delete.
            let pos = existing.ok_or(EINVAL)?;
            let slot = crate::kpage::swap_remove(&mut mem.slots, pos);
            gone = Some(self.unmap_slot(&mut mem.ept, slot, &mut flush));
            self.count_slots(&mem);
            drop(mem);
            flush.wait();
            drop(gone);
            return Ok(());
        }
        if let Some(pos) = existing {
            // KVM lets a slot move (new gpa) but not change size, backing or
            // the read-only flag.
            let s = &mem.slots[pos];
            if s.size != r.memory_size || s.uaddr != r.userspace_addr || s.readonly != readonly {
                return Err(EINVAL);
            }
            if s.gpa == Gpa(r.guest_phys_addr) {
                // Same place: at most dirty logging is turned on or off.
                let logging = mem.slots[pos].dirty.is_some();
                match (logging, log_dirty) {
                    (false, true) => {
                        // From now on every write must fault once: take
                        // write permission away from the mapped pages.
                        let Memory { ept, slots, .. } = &mut *mem;
                        let slot = &mut slots[pos];
                        slot.dirty = bitmap.take();
                        let mut any = false;
                        ept.for_each_mapped(slot.gpa, slot.end(), |_, e| {
                            let v = e.fetch_and(!crate::ept::WRITE, Ordering::AcqRel);
                            mapping_gone(Mapping::of(v));
                            any = true;
                        });
                        if any {
                            flush.request();
                        }
                    }
                    (true, false) => {
                        // Freed after the lock: kvfree may sleep.
                        let old = mem.slots[pos].dirty.take();
                        drop(mem);
                        drop(old);
                    }
                    _ => {}
                }
                return Ok(());
            }
        }
        let end = r.guest_phys_addr + r.memory_size;
        if mem.slots.iter().any(|s| s.id != r.slot && r.guest_phys_addr < s.gpa.0 + s.size && s.gpa.0 < end) {
            return Err(EEXIST);
        }
        let serial = mem.next_serial;
        mem.next_serial += 1;
        let new = Slot {
            id: r.slot,
            serial,
            gpa: Gpa(r.guest_phys_addr),
            size: r.memory_size,
            uaddr: r.userspace_addr,
            readonly,
            notifier: notifier.take(),
            dirty: bitmap.take(),
        };
        // No allocation: `slots` has room for MAX_SLOTS from the start.
        mem.slots.push(new, GFP_NOWAIT)?;
        if let Some(pos) = existing {
            // A move: the old placement goes away (and its mappings).
            let old = crate::kpage::swap_remove(&mut mem.slots, pos);
            gone = Some(self.unmap_slot(&mut mem.ept, old, &mut flush));
        }
        self.count_slots(&mem);
        drop(mem);
        flush.wait();
        drop(gone);
        Ok(())
    }

    /// Removes a slot's pages from EPT and requests a flush; the caller waits
    /// for it after the memory lock, and only then drops the slot (removes
    /// its MMU notifier): until then the notifier keeps the VMM's pages
    /// from going while a CPU may still reach them.
    fn unmap_slot(&self, ept: &mut Ept, slot: Slot, flush: &mut RemoteFlush<'_>) -> Slot {
        let n = ept.unmap_range(slot.gpa, slot.end(), mapping_gone);
        if n != 0 {
            self.counts.pages_4k.fetch_sub(n, Ordering::Relaxed);
            flush.request();
        }
        slot
    }

    /// The MMU notifier of slot `mni` says the VMM's mapping of [start,
    /// end) is changing: unmap those pages from EPT (marking the writable
    /// ones dirty) and flush the CPUs before returning, after which the
    /// kernel may free or reuse the pages. The guest faults on them again
    /// and gets the new pages, as under KVM. Called with the notifier's
    /// sequence count `seq` to publish under the memory lock
    /// (mmu_interval_set_seq).
    fn invalidate(&self, mni: *mut kglue::mmu_interval_notifier, start: u64, end: u64, seq: core::ffi::c_ulong) {
        // Waited for after the lock (declared before it, dropped after).
        let mut flush = RemoteFlush::new(self);
        let mut mem = self.mem.lock();
        // SAFETY: `mni` is the notifier the core is calling; under our lock.
        unsafe { rvmx_glue_mmu_interval_set_seq(mni, seq) };
        // Whatever this finds, it returns only once no CPU can use a
        // translation another thread removed and is still flushing (a slot
        // deleted, the same range invalidated twice at once).
        flush.catch_up();
        let Memory { ept, slots, .. } = &mut *mem;
        // A notifier whose slot is gone (or not yet in the list) has
        // nothing mapped.
        let Some(slot) = slots.iter().find(|s| s.notifier.as_ref().is_some_and(|n| n.ptr.cast() == mni)) else {
            return;
        };
        let lo = start.max(slot.uaddr);
        let hi = end.min(slot.uaddr + slot.size);
        if lo >= hi {
            return;
        }
        // The guest pages that hold [lo, hi) of the VMM's memory.
        let first = slot.page_gpa((lo - slot.uaddr) / PAGE);
        let last = slot.page_gpa((hi - 1 - slot.uaddr) / PAGE);
        let n = ept.unmap_range(first, Gpa(last.0 + PAGE), mapping_gone);
        if n != 0 {
            self.counts.pages_4k.fetch_sub(n, Ordering::Relaxed);
            flush.request();
        }
    }

    /// Handles an EPT violation at `gpa` (outside the guest, may sleep): maps
    /// the page if a slot backs it, or says it is MMIO.
    pub(crate) fn fault_in(&self, gpa: Gpa, write: bool, cache: &mut TableCache) -> Result<Fault> {
        let page_gpa = Gpa(gpa.0 & !(PAGE - 1));
        // 1. Under the memory lock: which slot, and is the page there yet?
        let (serial, uaddr, writable, notifier) = {
            let mut mem = self.mem.lock();
            let Memory { ept, slots, .. } = &mut *mem;
            let Some(slot) = slots.iter_mut().find(|s| s.contains(gpa)) else {
                return Ok(Fault::Mmio);
            };
            if write && slot.readonly {
                return Ok(Fault::Mmio);
            }
            let index = slot.index_of(gpa);
            if ept.is_mapped(page_gpa) {
                // Mapped already: another vCPU got here first, or this is a
                // write to a page that dirty logging write-protected. The
                // page is dirty now, and writable until the next
                // KVM_GET_DIRTY_LOG.
                if write {
                    slot.mark_dirty(index);
                    ept.set_writable(page_gpa, true);
                }
                return Ok(Fault::Mapped);
            }
            let notifier = slot.notifier.clone().ok_or(EFAULT)?;
            (slot.serial, slot.uaddr + index * PAGE, !slot.readonly, notifier)
        };

        // 2. Without it: fault the page in and take a reference. That may
        //    sleep for as long as the VMM's memory makes it (swap-in,
        //    userfaultfd, FUSE); holding the lock here would stop every
        //    vCPU of the VM and every memory ioctl behind one stuck page.
        //    The sequence count is read first: if the VMM's mapping changes
        //    from here on, `changed_since` says so below and the page is
        //    not mapped. The EPT tables the mapping may need are allocated
        //    here too.
        let seq = notifier.read_begin();
        let mut page = core::ptr::null_mut();
        // SAFETY: the caller is the VM's process (checked at every ioctl),
        // so `uaddr` is an address of the memory the slot was created with.
        kernel::error::to_result(unsafe { rvmx_glue_get_user_page(uaddr, writable, &mut page) })?;
        // INVARIANT: a reference taken just now. Dropped after the lock
        // below (declared before its guard), mapped or not.
        let mut page_ref = PageRef { page, dirty: false };
        // SAFETY: `page` is a page we hold a reference on.
        let hpa = Hpa(unsafe { rvmx_glue_page_to_phys(page) });
        cache.top_up()?;

        // 3. Under the lock again: map it, unless the slot changed meanwhile
        //    (deleted, moved: a new serial), the VMM's mapping changed (then
        //    this page may be on its way out), or another vCPU mapped the
        //    page first. Then the guest runs again and faults again if it
        //    still must.
        let mut mem = self.mem.lock();
        let Memory { ept, slots, .. } = &mut *mem;
        let Some(slot) = slots.iter_mut().find(|s| s.serial == serial) else {
            return Ok(Fault::Mapped);
        };
        if notifier.changed_since(seq) || ept.is_mapped(page_gpa) {
            return Ok(Fault::Mapped);
        }
        // With dirty logging, a page that was only read is mapped read-only,
        // so that its first write faults and is recorded.
        let w = writable && (write || slot.dirty.is_none());
        let mapped = ept.map(page_gpa, hpa, w, cache);
        // Tables it added stay, mapped or not.
        self.counts.ept_tables.store(ept.tables(), Ordering::Relaxed);
        mapped?;
        page_ref.dirty = w;
        self.counts.pages_4k.fetch_add(1, Ordering::Relaxed);
        if write {
            slot.mark_dirty(slot.index_of(gpa));
        }
        Ok(Fault::Mapped)
    }

    /// Writes guest-physical memory (the data of a string IN). Fails with
    /// EFAULT where no slot backs `gpa` or the slot is read-only.
    pub(crate) fn write_guest(&self, mut gpa: Gpa, buf: &[u8]) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let n = ((PAGE - gpa.page_offset()) as usize).min(buf.len() - done);
            let uaddr = self.user_addr(gpa, true)?;
            // The destination is the VM process's memory (we run in it); a
            // bad address there is EFAULT, not a fault.
            // CAST: user addresses fit in usize on x86-64.
            UserSlice::new(uaddr as usize, n).writer().write_slice(&buf[done..done + n])?;
            done += n;
            // No slot reaches 2^64 (user_addr found one), so no wrap.
            gpa = gpa.wrapping_add(n as u64);
        }
        Ok(())
    }

    /// Where guest-physical `gpa` is in the launcher's memory, for an access
    /// rvmx makes for the guest (a write marks the page dirty). The memory
    /// lock is held only for the look-up, never across the copy, which may
    /// fault and sleep (userfaultfd, FUSE): a slot deleted meanwhile leaves
    /// an address in the launcher's own memory, which it may read or write
    /// anyway. Fails with EFAULT where no slot (or, for a write, no
    /// writable slot) backs `gpa`.
    fn user_addr(&self, gpa: Gpa, write: bool) -> Result<u64> {
        let mut mem = self.mem.lock();
        let slot = mem.slots.iter_mut().find(|s| s.contains(gpa) && !(write && s.readonly)).ok_or(EFAULT)?;
        if write {
            slot.mark_dirty(slot.index_of(gpa));
        }
        Ok(slot.uaddr + (gpa.0 - slot.gpa.0))
    }

    /// Whether guest RAM (writable RAM, for `write`) backs `gpa`.
    pub(crate) fn is_ram(&self, gpa: Gpa, write: bool) -> bool {
        self.mem.lock().slots.iter().any(|s| s.contains(gpa) && !(write && s.readonly))
    }

    /// Compare-and-exchange of a 4- or 8-byte guest page-table entry (the
    /// accessed and dirty bits of walk.rs): `Ok(true)` when replaced,
    /// `Ok(false)` when the guest changed it meanwhile. An entry in a
    /// read-only slot (ROM) is left as it is, as the ROM would.
    pub(crate) fn cmpxchg_guest(&self, gpa: Gpa, wide: bool, old: u64, new: u64) -> Result<bool> {
        let size = if wide { 8 } else { 4 };
        if gpa.0 % size != 0 {
            return Err(EINVAL);
        }
        let uaddr = match self.user_addr(gpa, true) {
            Ok(u) => u,
            Err(_) if self.user_addr(gpa, false).is_ok() => return Ok(true),
            Err(e) => return Err(e),
        };
        // SAFETY: an aligned address in the VM process's memory (we run in
        // it); a bad one is -EFAULT, not a fault.
        match unsafe { rvmx_glue_cmpxchg_user(uaddr, wide, old, new) } {
            0 => Ok(true),
            1 => Ok(false),
            e => Err(Error::from_errno(e)),
        }
    }

    /// KVM_GET_DIRTY_LOG: copies slot `slot`'s dirty bitmap to `uaddr` and
    /// clears it, as KVM does without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
    /// under the memory lock, the bitmap is taken and the pages it names are
    /// write-protected again, every CPU's cached translations are flushed,
    /// and only then is the bitmap copied out. A write before the flush is
    /// in memory by the time userspace reads the pages; a write after it
    /// faults and is in the next bitmap. So every page written since the
    /// last call is reported, and no other.
    pub(crate) fn get_dirty_log(&self, slot_id: u32, uaddr: u64) -> Result {
        // KVM: address space (bits 31:16) 0, ids below KVM_USER_MEM_SLOTS.
        if slot_id >> 16 != 0 || slot_id & 0xffff >= 32767 {
            return Err(EINVAL);
        }
        // The fresh bitmap is allocated before the memory lock (the MMU
        // notifier takes it from inside reclaim), for the slot's size then;
        // if the slot changed meanwhile, again.
        let mut flush = RemoteFlush::new(self);
        let bits = loop {
            let pages = {
                let mem = self.mem.lock();
                let slot = mem.slots.iter().find(|s| s.id == slot_id).ok_or(ENOENT)?;
                if slot.dirty.is_none() {
                    return Err(ENOENT);
                }
                slot.pages()
            };
            let fresh = new_bitmap(pages)?;
            let mut mem = self.mem.lock();
            let Memory { ept, slots, .. } = &mut *mem;
            let slot = slots.iter_mut().find(|s| s.id == slot_id).ok_or(ENOENT)?;
            if slot.dirty.is_none() {
                return Err(ENOENT);
            }
            if slot.pages() != pages {
                continue;
            }
            let bits = slot.dirty.replace(fresh).ok_or(ENOENT)?;
            let mut any = false;
            for (w, &word) in bits.iter().enumerate() {
                let mut m = word;
                while m != 0 {
                    let index = w as u64 * 64 + u64::from(m.trailing_zeros());
                    if let Some(was) = ept.set_writable(slot.page_gpa(index), false) {
                        mapping_gone(was);
                    }
                    m &= m - 1;
                    any = true;
                }
            }
            if any {
                flush.request();
            }
            break bits;
        };
        // A write through a translation that was writable before is in
        // memory once every CPU in the guest has left it; from then on a
        // write faults and lands in the next bitmap.
        flush.wait();
        let len = bits.len() * 8;
        // SAFETY: `bits` is `len` bytes of plain integers, initialized.
        let bytes = unsafe { core::slice::from_raw_parts(bits.as_ptr().cast::<u8>(), len) };
        // CAST: user addresses fit in usize on x86-64.
        UserSlice::new(uaddr as usize, len).writer().write_slice(bytes)
    }

    /// The four PDPTEs of 32-bit PAE paging, from the 32-byte table at
    /// guest-physical `cr3` (bits 31:5), or `None` if one that is present
    /// has reserved bits set (the CPU would refuse it with #GP). Fails with
    /// EFAULT if no slot backs the table.
    pub(crate) fn read_pdptes(&self, cr3: u64) -> Result<Option<[u64; 4]>> {
        let mut raw = [0u8; 32];
        self.read_guest(Gpa(cr3 & 0xffff_ffe0), &mut raw)?;
        let maxphy = crate::hw::cpuid(0x8000_0008, 0)[0] & 0xff;
        // Bits 2:1 and 8:5 are reserved, and every address bit the CPU
        // does not have.
        let reserved = 0x1e6 | (u64::MAX << maxphy);
        let mut p = [0u64; 4];
        for (i, e) in p.iter_mut().enumerate() {
            *e = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().map_err(|_| EINVAL)?);
            if *e & 1 != 0 && *e & reserved != 0 {
                return Ok(None);
            }
        }
        Ok(Some(p))
    }

    /// Reads guest-physical memory (for decoding the instruction behind an
    /// MMIO exit). Fails with EFAULT where no slot backs `gpa`.
    pub(crate) fn read_guest(&self, mut gpa: Gpa, buf: &mut [u8]) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let n = ((PAGE - gpa.page_offset()) as usize).min(buf.len() - done);
            let uaddr = self.user_addr(gpa, false)?;
            // The source is the VM process's memory (we run in it).
            // CAST: user addresses fit in usize on x86-64.
            UserSlice::new(uaddr as usize, n).reader().read_slice(&mut buf[done..done + n])?;
            done += n;
            // No slot reaches 2^64 (user_addr found one), so no wrap.
            gpa = gpa.wrapping_add(n as u64);
        }
        Ok(())
    }
}

/// INVEPT single-context for `eptp` on every CPU, waiting for all: at a
/// VM's end only (never under a lock; the flushes of a live VM are
/// `RemoteFlush`'s).
fn invept_everywhere(eptp: u64) {
    extern "C" fn one(info: *mut core::ffi::c_void) {
        // CAST: `info` carries the EPTP value, not a pointer.
        let _ = crate::hw::vmx::invept_single(info as u64);
    }
    // SAFETY: `one` runs INVEPT only, which is safe in IPI context on a CPU
    // in VMX operation (every online CPU, while rvmx is loaded).
    unsafe { kglue::rvmx_glue_on_each_cpu(Some(one), eptp as *mut core::ffi::c_void) };
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // No vCPU is left (each holds the VM), so no CPU runs this EPT.
        // CPUs may still cache its translations, tagged by this EPTP, which
        // a later VM could reuse once its root page is freed. That VM's
        // vCPUs flush on their first entry on each CPU (`RemoteFlush`);
        // and, so that no stale translation to a freed page or table
        // outlives this VM on any CPU whatever happens later, every CPU
        // drops them now, before the tables and pages go. No lock of ours
        // is held, and this is once per VM.
        invept_everywhere(self.eptp);
        // The guest may have written the pages it has mapped writable: mark
        // them dirty while the slots' notifiers still guarantee that EPT
        // maps only live pages of the VMM (the tables go with `mem`).
        {
            let mut mem = self.mem.lock();
            mem.ept.for_each_mapped(Gpa(0), Gpa(u64::MAX), |_, e| mapping_gone(Mapping::of(e.load(Ordering::Acquire))));
        }
        // The slots go first, before any other field: their notifiers call back
        // into this `Vm` until removed. Dropped outside the lock (see `SlotNotifier`).
        let slots = core::mem::take(&mut self.mem.lock().slots);
        drop(slots);
    }
}

/// Called by a slot's MMU interval notifier (kglue/memory.c) when the VMM's
/// mapping of part of the slot changes. `Vm::invalidate` never sleeps (a
/// spinlock, IPIs, marking pages dirty without folio locks), so it runs for
/// callers that cannot sleep too (`blockable` false: the OOM reaper), and
/// the guest's pages are freed with the rest of the victim's memory.
#[no_mangle]
pub(crate) extern "C" fn rvmx_slot_invalidate(
    vm: *const core::ffi::c_void,
    mni: *mut kglue::mmu_interval_notifier,
    start: u64,
    end: u64,
    seq: core::ffi::c_ulong,
) {
    // SAFETY: the notifier was made for this `Vm` (`SlotNotifier::new`),
    // and a `Vm` removes its notifiers before it is freed (its drop).
    let vm = unsafe { &*vm.cast::<Vm>() };
    vm.invalidate(mni, start, end, seq);
}
