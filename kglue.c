// SPDX-License-Identifier: GPL-2.0
/*
 * kglue.c - kernel services that Linux 6.12's Rust bindings cannot reach.
 *
 * 6.12 has no Rust miscdevice abstraction, and the CPU-hotplug, CR4-shadow,
 * reboot and module-notifier interfaces are static inlines or macros that
 * bindgen does not see.  Each function here is a thin, policy-free wrapper;
 * every decision about VMX is made in Rust (vmxon.rs, dev.rs).
 */
#include <linux/anon_inodes.h>
#include <linux/interrupt.h>
#include <linux/cpuhotplug.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/ratelimit.h>
#include <linux/slab.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/reboot.h>
#include <linux/syscore_ops.h>
#include <linux/smp.h>
#include <asm/reboot.h>
#include <asm/special_insns.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>
#include <asm/apic.h>
#include <asm/debugreg.h>
#include <asm/gsseg.h>
#include <asm/mce.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/processor.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/io.h>
#include <asm/tlbflush.h>

#include "kglue.h"
#include "uapi/rvmx.h"

/* ---- /dev/rvmx ---------------------------------------------------------- */

static const struct file_operations rvmx_dev_fops = {
	.owner = THIS_MODULE,	/* the module stays while the device is open */
	.unlocked_ioctl = rvmx_dev_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice rvmx_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "rvmx",
	.fops = &rvmx_dev_fops,
	.mode = 0600,
};

int rvmx_glue_misc_register(void)
{
	return misc_register(&rvmx_misc);
}

void rvmx_glue_misc_deregister(void)
{
	misc_deregister(&rvmx_misc);
}

/* ---- CR4 through the kernel's shadow (never a raw CR4 write) ------------ */

unsigned long rvmx_glue_cr4_read_shadow(void)
{
	return cr4_read_shadow();
}

unsigned long rvmx_glue_cr4_read_raw(void)
{
	return __read_cr4();
}

void rvmx_glue_cr4_set_vmxe(void)
{
	cr4_set_bits(X86_CR4_VMXE);
}

void rvmx_glue_cr4_clear_vmxe(void)
{
	cr4_clear_bits(X86_CR4_VMXE);
}

/* ---- CPUs and pages ------------------------------------------------------ */

unsigned int rvmx_glue_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

/*
 * Whether a log line about something a guest or VMM can repeat at will
 * (a failed VM entry) may be printed now: at most 10 every 5 seconds,
 * module-wide, as printk_ratelimited allows.
 */
bool rvmx_glue_log_ratelimit(void)
{
	static DEFINE_RATELIMIT_STATE(rs, DEFAULT_RATELIMIT_INTERVAL, DEFAULT_RATELIMIT_BURST);

	return __ratelimit(&rs);
}

unsigned int rvmx_glue_raw_cpu_id(void)
{
	return raw_smp_processor_id();
}

u64 rvmx_glue_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

/*
 * CPU hotplug: the callbacks run on the CPU coming online / going offline.
 * cpuhp_setup_state() also runs rvmx_cpu_online() on every CPU already
 * online and, if one fails, runs rvmx_cpu_offline() on those that succeeded
 * before returning the error: that is rvmx's VMXON rollback.
 * Returns the dynamic state number (> 0) or a negative errno.
 */
int rvmx_glue_cpuhp_setup(void)
{
	return cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "rvmx:online",
				 rvmx_cpu_online, rvmx_cpu_offline);
}

void rvmx_glue_cpuhp_remove(int state)
{
	cpuhp_remove_state(state);
}

/* ---- Leaving VMX on reboot, kexec and crash ------------------------------ */

static int rvmx_reboot_notify(struct notifier_block *nb, unsigned long action,
			      void *data)
{
	rvmx_reboot();
	return NOTIFY_OK;
}

static struct notifier_block rvmx_reboot_nb = {
	.notifier_call = rvmx_reboot_notify,
};

/*
 * While rvmx holds VMX, refuse to load KVM (kvm.ko, and so kvm_intel which
 * needs it). Two hypervisors cannot share VMX root operation, and the
 * kernel's emergency virtualization callback has a single slot: kvm_intel
 * registers it before it finds out VMX is taken, and reboot.c WARNs on a
 * second registration. Refusing at MODULE_STATE_COMING fails the load with
 * EBUSY before any KVM code runs, and says why.
 */
static int rvmx_module_notify(struct notifier_block *nb, unsigned long action,
			      void *data)
{
	struct module *mod = data;

	if (action == MODULE_STATE_COMING &&
	    (!strcmp(mod->name, "kvm") || !strcmp(mod->name, "kvm_intel"))) {
		pr_err("rvmx: refusing to load %s: rvmx is using VMX on this machine (rmmod rvmx first)\n",
		       mod->name);
		return notifier_from_errno(-EBUSY);
	}
	return NOTIFY_DONE;
}

static struct notifier_block rvmx_module_nb = {
	.notifier_call = rvmx_module_notify,
};

/* Whether kvm.ko is loaded (its exported kvm_rebooting symbol resolves). */
bool rvmx_glue_kvm_loaded(void)
{
	void *sym = __symbol_get("kvm_rebooting");

	if (!sym)
		return false;
	__symbol_put("kvm_rebooting");
	return true;
}

/* ---- Suspend to RAM ------------------------------------------------------ */

/*
 * The last CPU up when the system suspends, and the first after resume,
 * does not go through CPU hotplug: syscore callbacks run on it with
 * interrupts off. It leaves VMX before the firmware takes over (which
 * clears it anyway, along with CR4) and enters it again after, as KVM's
 * kvm_suspend/kvm_resume do. The other CPUs leave and enter through the
 * hotplug callbacks (rvmx_cpu_offline/online).
 */
extern int rvmx_cpu_suspend(void);
extern void rvmx_cpu_resume(void);

#ifdef RVMX_SYSCORE_WITH_DATA	/* Kbuild: the newer syscore interface */
static int rvmx_syscore_suspend(void *data)
{
	return rvmx_cpu_suspend();
}

static void rvmx_syscore_resume(void *data)
{
	rvmx_cpu_resume();
}

static const struct syscore_ops rvmx_syscore_ops = {
	.suspend = rvmx_syscore_suspend,
	.resume = rvmx_syscore_resume,
};

static struct syscore rvmx_syscore = { .ops = &rvmx_syscore_ops };
#define rvmx_register_syscore() register_syscore(&rvmx_syscore)
#define rvmx_unregister_syscore() unregister_syscore(&rvmx_syscore)
#else
static struct syscore_ops rvmx_syscore_ops = {
	.suspend = rvmx_cpu_suspend,
	.resume = rvmx_cpu_resume,
};
#define rvmx_register_syscore() register_syscore_ops(&rvmx_syscore_ops)
#define rvmx_unregister_syscore() unregister_syscore_ops(&rvmx_syscore_ops)
#endif

int rvmx_glue_guards_register(void)
{
	int r = register_module_notifier(&rvmx_module_nb);

	if (r)
		return r;
	r = register_reboot_notifier(&rvmx_reboot_nb);
	if (r) {
		unregister_module_notifier(&rvmx_module_nb);
		return r;
	}
	/*
	 * Without CONFIG_KVM_X86 the kernel has no emergency hook and these
	 * are no-ops: a crash then leaves VMX on (the reboot notifier still
	 * covers orderly reboots).
	 */
	cpu_emergency_register_virt_callback(rvmx_emergency_vmxoff);
	rvmx_register_syscore();
	return 0;
}

void rvmx_glue_guards_unregister(void)
{
	rvmx_unregister_syscore();
	cpu_emergency_unregister_virt_callback(rvmx_emergency_vmxoff);
	unregister_reboot_notifier(&rvmx_reboot_nb);
	unregister_module_notifier(&rvmx_module_nb);
}

void rvmx_glue_on_each_cpu(void (*fn)(void *), void *info)
{
	on_each_cpu(fn, info, 1);
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

/* ---- Preemption, interrupts, scheduling, the FPU ------------------------- */

void rvmx_glue_preempt_disable(void)
{
	preempt_disable();
}

void rvmx_glue_preempt_enable(void)
{
	preempt_enable();
}

void rvmx_glue_irq_disable(void)
{
	local_irq_disable();
}

void rvmx_glue_irq_enable(void)
{
	local_irq_enable();
}

bool rvmx_glue_need_resched(void)
{
	return need_resched();
}

void rvmx_glue_cond_resched(void)
{
	cond_resched();
}

/*
 * Give the FPU registers to the guest: the launcher's FPU state is saved
 * to its task (and restored on return to user mode), preemption is off
 * until rvmx_glue_fpu_end().
 */
void rvmx_glue_fpu_begin(void)
{
	kernel_fpu_begin();
}

void rvmx_glue_fpu_end(void)
{
	kernel_fpu_end();
}

/*
 * After a VM exit the CPU has set the GDT limit to 0xffff and the TR limit
 * to 0x67; put Linux's back, as KVM does when it leaves guest context.
 */
void rvmx_glue_restore_host_descriptor_limits(void)
{
	load_fixmap_gdt(raw_smp_processor_id());
	invalidate_tss_limit();
}

/*
 * The VMM's LDT and FS/GS selectors. A VM exit leaves LDTR null and loads
 * the host selectors of the VMCS, which must be 0 for user selectors (RPL
 * 3, or TI set: SDM Vol. 3C §27.2.3); Linux reloads neither before the
 * return to user mode, so a VMM that uses modify_ldt (or a selector in FS/GS)
 * would find them gone. Saved when a guest section begins and put back when
 * it ends, as KVM's vmx_prepare_switch_to_host does; the user GS base that
 * load_gs_index resets is restored afterwards with the swapped MSRs.
 */
void rvmx_glue_save_host_segments(struct rvmx_host_segments *s)
{
	savesegment(fs, s->fs);
	savesegment(gs, s->gs);
	asm volatile("sldt %0" : "=g"(s->ldt));
	/* Only needed (and only read) when the FS selector must be reloaded. */
	s->fs_base = 0;
	if (s->fs & 7)
		rdmsrl(MSR_FS_BASE, s->fs_base);
}

void rvmx_glue_restore_host_segments(const struct rvmx_host_segments *s)
{
	if (s->ldt || (s->gs & 7)) {
		asm volatile("lldt %0" : : "rm"(s->ldt));
		load_gs_index(s->gs);
	}
	if (s->fs & 7) {
		loadsegment(fs, s->fs);
		wrmsrl(MSR_FS_BASE, s->fs_base);
	}
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
	struct rvmx_slot_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL);

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
 * After a VM exit: the CPU set DR7 to 0x400; put the host's breakpoints
 * back if it has any armed, as KVM does after every exit (x86.c).
 */
void rvmx_glue_restore_host_breakpoints(void)
{
#ifdef CONFIG_HAVE_HW_BREAKPOINT
	if (hw_breakpoint_active())
		hw_breakpoint_restore();
#endif
}

/*
 * A machine check that hit while the guest ran (or during VM entry) caused
 * a VM exit instead of reaching the host's #MC handler: run that handler
 * now, with interrupts still off, as KVM's kvm_machine_check does (a fake
 * user-mode frame: the error was not in the kernel's own code).
 */
void rvmx_glue_machine_check(void)
{
	struct pt_regs regs = {
		.cs = 3,
		.flags = X86_EFLAGS_IF,
	};

	if (IS_ENABLED(CONFIG_X86_MCE))
		do_machine_check(&regs);
}

/*
 * Speculative-execution mitigations around VM entry, following what the
 * host kernel chose for itself (as KVM's vmx_setup_l1d_flush):
 * rvmx_glue_l1d_flush_mode() says whether L1TF asks for an L1D flush before
 * each entry: 0 not needed (CPU not affected, told by ARCH_CAPABILITIES it
 * may skip it, or mitigations off), 1 flush with IA32_FLUSH_CMD, 2 needed
 * but this CPU has no IA32_FLUSH_CMD (rvmx has no software flush: logged).
 */
/*
 * l1d_flush=software makes rvmx flush L1D by software before every VM
 * entry even where L1TF does not ask for it: the tests use it to run that
 * path on emulated CPUs that are not affected.
 */
static char *l1d_flush = "auto";
module_param(l1d_flush, charp, 0444);
MODULE_PARM_DESC(l1d_flush, "auto (as the host's L1TF mitigation asks) or software (always, by reading a buffer)");

/* 0: no flush; 1: IA32_FLUSH_CMD; 2: by software (no IA32_FLUSH_CMD). */
int rvmx_glue_l1d_flush_mode(void)
{
	u64 arch_cap = 0;

	if (!strcmp(l1d_flush, "software"))
		return 2;
	if (boot_cpu_has(X86_FEATURE_ARCH_CAPABILITIES))
		rdmsrl(MSR_IA32_ARCH_CAPABILITIES, arch_cap);
	if (!boot_cpu_has_bug(X86_BUG_L1TF) || l1tf_mitigation == L1TF_MITIGATION_OFF ||
	    (arch_cap & ARCH_CAP_SKIP_VMENTRY_L1DFLUSH))
		return 0;
	return boot_cpu_has(X86_FEATURE_FLUSH_L1D) ? 1 : 2;
}

/*
 * The software L1D flush, for CPUs affected by L1TF without IA32_FLUSH_CMD
 * (old microcode), as KVM's vmx_l1d_flush does it: read a 64 KiB buffer,
 * twice the size of any L1D, one byte per cache line, after touching each
 * page so that the TLB misses do not leave lines unfilled. The buffer's
 * pages are filled with different bytes, so that KSM cannot merge them.
 */
#define RVMX_L1D_FLUSH_ORDER 4
static struct page *rvmx_l1d_flush_pages;

int rvmx_glue_l1d_flush_alloc(void)
{
	int i;

	rvmx_l1d_flush_pages = alloc_pages(GFP_KERNEL, RVMX_L1D_FLUSH_ORDER);
	if (!rvmx_l1d_flush_pages)
		return -ENOMEM;
	for (i = 0; i < 1 << RVMX_L1D_FLUSH_ORDER; i++)
		memset(page_address(rvmx_l1d_flush_pages) + i * PAGE_SIZE, i + 1, PAGE_SIZE);
	return 0;
}

void rvmx_glue_l1d_flush_free(void)
{
	if (rvmx_l1d_flush_pages)
		__free_pages(rvmx_l1d_flush_pages, RVMX_L1D_FLUSH_ORDER);
	rvmx_l1d_flush_pages = NULL;
}

void rvmx_glue_l1d_flush_sw(void)
{
	const u8 *p = page_address(rvmx_l1d_flush_pages);
	unsigned long size = PAGE_SIZE << RVMX_L1D_FLUSH_ORDER, i;
	unsigned int a = 0, b, c = 0, d;

	for (i = 0; i < size; i += PAGE_SIZE)
		(void)READ_ONCE(p[i]);
	/* Serializing, as KVM's: the fill below starts after the TLB fills. */
	native_cpuid(&a, &b, &c, &d);
	for (i = 0; i < size; i += L1_CACHE_BYTES)
		(void)READ_ONCE(p[i]);
	rmb();
}

/*
 * IBPB when a CPU goes from one vCPU to another, so that one guest cannot
 * steer another's indirect branches (KVM: vmx_vcpu_load_vmcs). Vcpus are
 * told apart by a number never reused; the barrier is a no-op where the
 * kernel does not use IBPB.
 */
static DEFINE_PER_CPU(u64, rvmx_last_vcpu);

void rvmx_glue_ibpb_on_vcpu_switch(u64 uid)
{
	if (this_cpu_read(rvmx_last_vcpu) != uid) {
		this_cpu_write(rvmx_last_vcpu, uid);
		indirect_branch_prediction_barrier();
	}
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

/* ---- VM and vCPU file descriptors ---------------------------------------- */

static long rvmx_vm_fop_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return rvmx_vm_ioctl(f->private_data, cmd, arg);
}

static int rvmx_vm_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vm_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = rvmx_vm_fop_ioctl,
	.release = rvmx_vm_fop_release,
	.llseek = noop_llseek,
};

static long rvmx_vcpu_fop_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return rvmx_vcpu_ioctl(f->private_data, cmd, arg);
}

static int rvmx_vcpu_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vcpu_release(f->private_data);
	return 0;
}

/*
 * The vCPU mapping: page N of the file is rvmx_vcpu_page(vcpu, N), for N
 * below RVMX_VCPU_MMAP_PAGES. vm_insert_page() takes a reference on each
 * page, so the mapping stays valid after the vCPU is freed.
 */
static int rvmx_vcpu_fop_mmap(struct file *f, struct vm_area_struct *vma)
{
	unsigned long npages = vma_pages(vma), i;
	int r;

	if (vma->vm_pgoff >= RVMX_VCPU_MMAP_PAGES ||
	    npages > RVMX_VCPU_MMAP_PAGES - vma->vm_pgoff)
		return -EINVAL;
	for (i = 0; i < npages; i++) {
		r = vm_insert_page(vma, vma->vm_start + i * PAGE_SIZE,
				   rvmx_vcpu_page(f->private_data, vma->vm_pgoff + i));
		if (r)
			return r;
	}
	return 0;
}

static const struct file_operations rvmx_vcpu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = rvmx_vcpu_fop_ioctl,
	.mmap = rvmx_vcpu_fop_mmap,
	.release = rvmx_vcpu_fop_release,
	.llseek = noop_llseek,
};

/*
 * Statistics files (KVM_GET_STATS_FD on a VM or vCPU fd): read-only, in
 * KVM's binary format (stats.rs writes it). private_data holds a
 * reference to the VM or vCPU, dropped at release.
 */
static ssize_t rvmx_vm_stats_fop_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return rvmx_vm_stats_read(f->private_data, buf, size, pos);
}

static int rvmx_vm_stats_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vm_stats_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vm_stats_fops = {
	.owner = THIS_MODULE,
	.read = rvmx_vm_stats_fop_read,
	.release = rvmx_vm_stats_fop_release,
	.llseek = noop_llseek,
};

static ssize_t rvmx_vcpu_stats_fop_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return rvmx_vcpu_stats_read(f->private_data, buf, size, pos);
}

static int rvmx_vcpu_stats_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vcpu_stats_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vcpu_stats_fops = {
	.owner = THIS_MODULE,
	.read = rvmx_vcpu_stats_fop_read,
	.release = rvmx_vcpu_stats_fop_release,
	.llseek = noop_llseek,
};

/* As KVM's kvm_vm_ioctl_get_stats_fd: O_RDONLY, FMODE_PREAD. */
static int rvmx_stats_fd(void *owner, bool vcpu)
{
	struct file *file;
	int fd = get_unused_fd_flags(O_CLOEXEC);

	if (fd < 0)
		return fd;
	file = anon_inode_getfile(vcpu ? "rvmx-vcpu-stats" : "rvmx-vm-stats",
				  vcpu ? &rvmx_vcpu_stats_fops : &rvmx_vm_stats_fops,
				  owner, O_RDONLY);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_mode |= FMODE_PREAD;
	fd_install(fd, file);
	return fd;
}

int rvmx_glue_vm_stats_fd(void *vm)
{
	return rvmx_stats_fd(vm, false);
}

int rvmx_glue_vcpu_stats_fd(void *vcpu)
{
	return rvmx_stats_fd(vcpu, true);
}

int rvmx_glue_current_tgid(void)
{
	return task_tgid_nr(current);
}

int rvmx_glue_vm_fd(void *vm)
{
	return anon_inode_getfd("rvmx-vm", &rvmx_vm_fops, vm, O_RDWR | O_CLOEXEC);
}

int rvmx_glue_vcpu_fd(void *vcpu)
{
	return anon_inode_getfd("rvmx-vcpu", &rvmx_vcpu_fops, vcpu, O_RDWR | O_CLOEXEC);
}

void *rvmx_glue_phys_to_virt(u64 pa)
{
	return phys_to_virt(pa);
}

struct page *rvmx_glue_virt_to_page(void *addr)
{
	return virt_to_page(addr);
}

/*
 * Softirqs waiting on this CPU. A guest section runs inside
 * kernel_fpu_begin(), which disables bottom halves: the run loop must end
 * the section when softirqs are pending (timers, RCU), or they would wait
 * for as long as the guest runs.
 */
bool rvmx_glue_softirq_pending(void)
{
	return local_softirq_pending() != 0;
}

/*
 * KVM_SET_SIGNAL_MASK: while KVM_RUN runs, the thread's blocked signals are
 * the vCPU's mask (as KVM's kvm_sigset_activate/deactivate).
 */
void rvmx_glue_sigmask_activate(const u64 *mask)
{
	sigset_t set;

	memcpy(&set, mask, sizeof(set));
	sigdelsetmask(&set, sigmask(SIGKILL) | sigmask(SIGSTOP));
	sigprocmask(SIG_SETMASK, &set, &current->real_blocked);
}

void rvmx_glue_sigmask_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}

unsigned int rvmx_glue_num_online_cpus(void)
{
	return num_online_cpus();
}
