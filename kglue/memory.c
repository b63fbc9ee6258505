// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/memory.c - memory: kernel pages and their addresses, the VM
 * process's mm, faulting its pages in for EPT (no long-term pins), the MMU
 * interval notifier of each memory slot, and compare-and-exchange on the
 * VMM's memory for the guest page walk (vm.rs, ept.rs, kpage.rs).
 */
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/swap.h>
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
 * Fault in one page of the current process at uaddr (for write unless
 * read-only) and take a reference on it, for as long as it takes to map it
 * in EPT: the reference is dropped right after (rvmx_glue_release_page),
 * and the MMU notifier keeps EPT coherent from then on, as KVM's
 * hva_to_pfn/kvm_release_faultin_page do. No long-term pin: the kernel may
 * swap, migrate, compact or merge (KSM) the page; nothing is counted
 * against RLIMIT_MEMLOCK. May sleep (swap-in, userfaultfd). Returns 0 and
 * the page, or a negative errno.
 */
int rvmx_glue_get_user_page(u64 uaddr, bool write, struct page **page)
{
	int r = get_user_pages_fast(uaddr, 1, write ? FOLL_WRITE : 0, page);

	if (r == 1)
		return 0;
	return r < 0 ? r : -EFAULT;
}

/*
 * Drop the reference rvmx_glue_get_user_page() took. A page mapped
 * writable in EPT may be written by the guest behind the VMM's page tables,
 * whose dirty bit the CPU then never sets: it is marked dirty here, and
 * again when the writable mapping goes (rvmx_glue_set_pfn_dirty), so that
 * reclaim writes it to swap or its file instead of dropping it (KVM:
 * kvm_release_page_dirty, kvm_set_pfn_dirty).
 */
void rvmx_glue_release_page(struct page *page, bool dirty)
{
	if (dirty && !PageReserved(page))
		SetPageDirty(page);
	if (!PageReserved(page))
		mark_page_accessed(page);
	put_page(page);
}

/*
 * A writable EPT mapping of host physical address hpa goes away (MMU
 * notifier, slot deletion, write protection for dirty logging, VM end):
 * the page may have been written. Never sleeps, takes no lock (the callers
 * hold the VM's memory spinlock, inside reclaim). The page is still
 * mapped by the VMM (EPT maps only what the VMM maps: the MMU notifier
 * removes the EPT entry first), so it cannot be freed under us.
 */
void rvmx_glue_set_pfn_dirty(u64 hpa)
{
	unsigned long pfn = hpa >> PAGE_SHIFT;

	if (pfn_valid(pfn) && !PageReserved(pfn_to_page(pfn)))
		SetPageDirty(pfn_to_page(pfn));
}

/*
 * MMU interval notifiers: one per memory slot, over the slot's range of
 * the VMM's address space. When that range changes (munmap, mremap,
 * MADV_DONTNEED, a new mapping on top, fork's copy-on-write, the process
 * exiting), the core calls rvmx_slot_invalidate() (vm.rs), which unmaps
 * the pages from EPT and flushes the CPUs before returning: only then may
 * the kernel free or reuse them. The guest then faults on the VMM's new
 * pages, as under KVM. vm.rs's fault path uses the notifier's sequence
 * count so that a page looked up while an invalidation ran is never
 * mapped.
 */
struct rvmx_slot_notifier {
	/* First: vm.rs identifies a slot by this address. */
	struct mmu_interval_notifier mni;
	const void *vm;
};

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
