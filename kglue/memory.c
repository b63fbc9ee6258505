// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/memory.c - memory: kernel pages and their addresses, the VM
 * process's mm, pinning its pages (accounted as pinned memory), the MMU
 * interval notifier of each memory slot, and compare-and-exchange on the
 * VMM's memory for the guest page walk (vm.rs, ept.rs, kpage.rs).
 */
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "kglue.h"

u64 rvmx_glue_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

/* ---- Pages with a kernel address (run page, EPT tables, XSAVE area) ----- */

void *rvmx_glue_alloc_zeroed_page(void)
{
	return (void *)get_zeroed_page(GFP_KERNEL_ACCOUNT);
}

void rvmx_glue_free_page(void *addr)
{
	free_page((unsigned long)addr);
}

u64 rvmx_glue_virt_to_phys(void *addr)
{
	return virt_to_phys(addr);
}

/* ---- The VM's process and its memory ------------------------------------ */

struct mm_struct *rvmx_glue_mm_grab_current(void)
{
	mmgrab(current->mm);
	return current->mm;
}

bool rvmx_glue_mm_is_current(struct mm_struct *mm)
{
	return current->mm == mm;
}

void rvmx_glue_mm_drop(struct mm_struct *mm)
{
	mmdrop(mm);
}

bool rvmx_glue_access_ok(u64 uaddr, u64 size)
{
	return access_ok((void __user *)(unsigned long)uaddr, size);
}

/*
 * Pin one page of the current process at uaddr (for write unless
 * read-only). Returns 0 and the page, or a negative errno.
 *
 * Pinned pages are accounted in mm->pinned_vm (VmPin in /proc/PID/status)
 * and limited by RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK, as
 * RDMA's ib_umem and io_uring do: -ENOMEM beyond it.
 */
int rvmx_glue_pin_user_page(u64 uaddr, bool write, struct page **page)
{
	unsigned int gup = FOLL_LONGTERM | (write ? FOLL_WRITE : 0);
	struct mm_struct *mm = current->mm;
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	int r;

	if (atomic64_add_return(1, &mm->pinned_vm) > limit &&
	    !capable(CAP_IPC_LOCK)) {
		atomic64_dec(&mm->pinned_vm);
		return -ENOMEM;
	}
	r = pin_user_pages_fast(uaddr, 1, gup, page);
	if (r == 1)
		return 0;
	atomic64_dec(&mm->pinned_vm);
	return r < 0 ? r : -EFAULT;
}

/*
 * Unpin a page rvmx_glue_pin_user_page() pinned for mm. With nolock, the
 * page is only flagged dirty instead of taking its folio lock: from an MMU
 * notifier, which reclaim calls with the folio locked. The pages a
 * FOLL_LONGTERM pin can hold (anonymous, shmem, hugetlbfs: GUP refuses
 * long-term pins of file pages that need writeback) need no lock for that,
 * which is also what KVM does (kvm_set_page_dirty).
 */
void rvmx_glue_unpin_user_page(struct mm_struct *mm, struct page *page,
			       bool dirty, bool nolock)
{
	if (nolock) {
		if (dirty)
			set_page_dirty(page);
		unpin_user_page(page);
	} else {
		unpin_user_pages_dirty_lock(&page, 1, dirty);
	}
	atomic64_dec(&mm->pinned_vm);
}

/*
 * MMU interval notifiers: one per memory slot, over the slot's range of
 * the VMM's address space. When that range changes (munmap, mremap,
 * MADV_DONTNEED, a new mapping on top, fork's copy-on-write, the process
 * exiting), the core calls rvmx_slot_invalidate() (vm.rs), which unmaps
 * the pages from EPT, flushes the CPUs and unpins them: the guest then
 * faults on the VMM's new pages, as under KVM. vm.rs's fault path uses the
 * notifier's sequence count so that a page pinned while an invalidation
 * ran is never mapped.
 */
struct rvmx_slot_notifier {
	/* First: vm.rs identifies a slot by this address. */
	struct mmu_interval_notifier mni;
	const void *vm;
};

extern void rvmx_slot_invalidate(const void *vm,
				 struct mmu_interval_notifier *mni, u64 start,
				 u64 end, unsigned long cur_seq);

/*
 * Never sleeps (vm.rs's memory lock is a spinlock), so it also serves the
 * callers that must not (!mmu_notifier_range_blockable(): the OOM reaper),
 * and always returns true.
 */
static bool rvmx_slot_notifier_invalidate(struct mmu_interval_notifier *mni,
					  const struct mmu_notifier_range *range,
					  unsigned long cur_seq)
{
	struct rvmx_slot_notifier *n =
		container_of(mni, struct rvmx_slot_notifier, mni);

	rvmx_slot_invalidate(n->vm, mni, range->start, range->end, cur_seq);
	return true;
}

static const struct mmu_interval_notifier_ops rvmx_slot_notifier_ops = {
	.invalidate = rvmx_slot_notifier_invalidate,
};

/* Registers a notifier on [start, start + length) of the current mm. */
struct rvmx_slot_notifier *rvmx_glue_slot_notifier_new(const void *vm,
						       u64 start, u64 length,
						       int *err)
{
	struct rvmx_slot_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL_ACCOUNT);

	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	n->vm = vm;
	*err = mmu_interval_notifier_insert(&n->mni, current->mm, start, length,
					    &rvmx_slot_notifier_ops);
	if (*err) {
		kfree(n);
		return NULL;
	}
	return n;
}

/* Removes it; waits for a callback that is running. May sleep. */
void rvmx_glue_slot_notifier_free(struct rvmx_slot_notifier *n)
{
	mmu_interval_notifier_remove(&n->mni);
	kfree(n);
}

unsigned long rvmx_glue_slot_notifier_read_begin(struct rvmx_slot_notifier *n)
{
	return mmu_interval_read_begin(&n->mni);
}

bool rvmx_glue_slot_notifier_read_retry(struct rvmx_slot_notifier *n,
					unsigned long seq)
{
	return mmu_interval_read_retry(&n->mni, seq);
}

void rvmx_glue_mmu_interval_set_seq(struct mmu_interval_notifier *mni,
				    unsigned long cur_seq)
{
	mmu_interval_set_seq(mni, cur_seq);
}

/*
 * Atomic compare-and-exchange of a guest page-table entry through the
 * launcher's mapping, for the accessed/dirty bits the software page walk
 * sets (walk.rs), as KVM's __try_cmpxchg_gpte. Returns 0 when replaced, 1
 * when the entry no longer held `old`, -EFAULT when it cannot be written.
 * `uaddr` must be aligned to the entry's size.
 */
/* As KVM's __try_cmpxchg_gpte (mmu/paging_tmpl.h); 0, 1 or -EFAULT. */
static int cmpxchg_user_u64(u64 __user *p, u64 old, u64 new)
{
	int r;

	/* The macro opens and closes the user access window itself. */
	if (!access_ok(p, sizeof(*p)))
		return -EFAULT;
	r = __try_cmpxchg_user(p, &old, new, fault);
	return r;
}

static int cmpxchg_user_u32(u32 __user *p, u32 old, u32 new)
{
	int r;

	/* The macro opens and closes the user access window itself. */
	if (!access_ok(p, sizeof(*p)))
		return -EFAULT;
	r = __try_cmpxchg_user(p, &old, new, fault);
	return r;
}

int rvmx_glue_cmpxchg_user(u64 uaddr, bool wide, u64 old, u64 new)
{
	if (wide)
		return cmpxchg_user_u64((u64 __user *)(unsigned long)uaddr, old, new);
	return cmpxchg_user_u32((u32 __user *)(unsigned long)uaddr, (u32)old, (u32)new);
}

void *rvmx_glue_phys_to_virt(u64 pa)
{
	return phys_to_virt(pa);
}

struct page *rvmx_glue_virt_to_page(void *addr)
{
	return virt_to_page(addr);
}
