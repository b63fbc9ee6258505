// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/run.c - services of the run loop (vcpu/run.rs): interrupts,
 * preemption and scheduling, the kernel FPU section, the host state a VM
 * exit does not restore (descriptor limits, segments, breakpoints),
 * machine checks, the speculative-execution mitigations around VM entry,
 * the MSRs restored on the return to user mode, and KVM_SET_SIGNAL_MASK's
 * mask.
 */
#include <linux/interrupt.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/smp.h>
#include <linux/user-return-notifier.h>
#include <asm/debugreg.h>
#include <asm/cpu.h>
#include <asm/cpufeature.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/gsseg.h>
#include <asm/mce.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/processor.h>

#include "kglue.h"

unsigned int rvmx_glue_raw_cpu_id(void)
{
	return raw_smp_processor_id();
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
 * Split-lock detection (Intel, since Ice Lake): the host traps a locked
 * access across two cache lines as #AC, in the guest too. Whether this
 * CPU does, and the kernel's own handling of a guest's, which warns and
 * slows the task down or refuses (returns false): as KVM's
 * handle_exception_nmi. May sleep.
 */
bool rvmx_glue_split_lock_detect(void)
{
	return boot_cpu_has(X86_FEATURE_SPLIT_LOCK_DETECT);
}

bool rvmx_glue_handle_guest_split_lock(unsigned long ip)
{
	return handle_guest_split_lock(ip);
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

/*
 * The host's L1TF setting (l1tf= on its command line). The kernel exports it
 * only when it is built with KVM_INTEL (arch/x86/kernel/cpu/bugs.c); without
 * it, assume the build's default, which flushes unless the kernel was built
 * without the L1TF mitigation.
 */
static enum l1tf_mitigations rvmx_l1tf_mitigation(void)
{
#if IS_ENABLED(CONFIG_KVM_INTEL)
	return l1tf_mitigation;
#else
	return IS_ENABLED(CONFIG_MITIGATION_L1TF) ? L1TF_MITIGATION_FLUSH : L1TF_MITIGATION_OFF;
#endif
}

/* 0: no flush; 1: IA32_FLUSH_CMD; 2: by software (no IA32_FLUSH_CMD). */
int rvmx_glue_l1d_flush_mode(void)
{
	u64 arch_cap = 0;

	if (!strcmp(l1d_flush, "software"))
		return 2;
	if (boot_cpu_has(X86_FEATURE_ARCH_CAPABILITIES))
		rdmsrl(MSR_IA32_ARCH_CAPABILITIES, arch_cap);
	if (!boot_cpu_has_bug(X86_BUG_L1TF) || rvmx_l1tf_mitigation() == L1TF_MITIGATION_OFF ||
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
 * What vmenter.S does after each VM exit, as the host kernel chose it
 * (patched in by alternatives): bit 0, the branch history is cleared
 * (Spectre-BHI, X86_FEATURE_CLEAR_BHB_LOOP_ON_VMEXIT); bit 1, the host's
 * SPEC_CTRL is written back (legacy IBRS, X86_FEATURE_KERNEL_IBRS). For the
 * load-time log line.
 */
int rvmx_glue_exit_mitigations(void)
{
	int m = 0;

	if (cpu_feature_enabled(X86_FEATURE_CLEAR_BHB_LOOP_ON_VMEXIT))
		m |= 1;
	if (cpu_feature_enabled(X86_FEATURE_KERNEL_IBRS))
		m |= 2;
	return m;
}

/* ---- MSRs restored on the return to user mode ---------------------------- */

/*
 * The guest's STAR, LSTAR, CSTAR, SFMASK and TSC_AUX matter to the host
 * only when it enters the kernel by SYSCALL or runs user code (RDTSCP,
 * RDPID; the kernel's own entry code never uses RDPID, for this very
 * reason: see GET_PERCPU_BASE in arch/x86/entry/calling.h). So, as KVM's
 * kvm_set_user_return_msr() does, a guest section writes the guest's
 * values and leaves them in the CPU when it ends; a user-return notifier
 * writes the host's back when this CPU next returns to user mode, whatever
 * task does, and rvmx_glue_uret_drop() does when the CPU goes offline,
 * suspends or reboots, or rvmx is unloaded. A section that follows on the
 * same CPU without a return to user mode in between (after an EPT fault,
 * string I/O, a reschedule) writes nothing, and no section reads them back:
 * the guest cannot write them without an exit (msrs/mod.rs, the MSR bitmap),
 * so rvmx always knows its values.
 *
 * Without CONFIG_USER_RETURN_NOTIFIER (a kernel built without KVM) the
 * host's values are written back at the end of every section instead.
 *
 * These WRMSRs are the only ones in kglue/: the notifier runs in C, and
 * keeping the per-CPU values next to it keeps them in one place.
 */
#define RVMX_URET_MAX 8

struct rvmx_uret {
	struct user_return_notifier urn;
	/* Whether urn is on this CPU's notifier list. */
	bool registered;
	/* The host's value of each MSR, read when the CPU came online. */
	u64 host[RVMX_URET_MAX];
	/* What the CPU holds now: host[i], or a guest's value. */
	u64 curr[RVMX_URET_MAX];
};

static DEFINE_PER_CPU(struct rvmx_uret, rvmx_uret);
/* Set once at module load, before any CPU uses them. */
static u32 rvmx_uret_msrs[RVMX_URET_MAX];
static unsigned int rvmx_uret_count;

/* The MSRs this module defers, in slot order (msrs/mod.rs). */
int rvmx_glue_uret_setup(const u32 *msrs, unsigned int count)
{
	if (count > RVMX_URET_MAX)
		return -EINVAL;
	memcpy(rvmx_uret_msrs, msrs, count * sizeof(*msrs));
	rvmx_uret_count = count;
	return 0;
}

/*
 * Puts the host's values back on this CPU. Interrupts are off throughout:
 * the reboot IPI (rvmx_reboot) may run this on a CPU that is already here.
 */
static void rvmx_uret_restore(struct rvmx_uret *u)
{
	unsigned long flags;
	unsigned int i;

	local_irq_save(flags);
#ifdef CONFIG_USER_RETURN_NOTIFIER
	if (u->registered) {
		u->registered = false;
		user_return_notifier_unregister(&u->urn);
	}
#endif
	for (i = 0; i < rvmx_uret_count; i++) {
		if (u->curr[i] != u->host[i]) {
			wrmsrl(rvmx_uret_msrs[i], u->host[i]);
			u->curr[i] = u->host[i];
		}
	}
	local_irq_restore(flags);
}

#ifdef CONFIG_USER_RETURN_NOTIFIER
static void rvmx_on_user_return(struct user_return_notifier *urn)
{
	rvmx_uret_restore(container_of(urn, struct rvmx_uret, urn));
}
#endif

/*
 * This CPU comes online (or back from suspend): read the host's values.
 * Any guest value left from before is put back first, so that it cannot
 * be taken for the host's.
 */
void rvmx_glue_uret_cpu_online(void)
{
	struct rvmx_uret *u = get_cpu_ptr(&rvmx_uret);
	unsigned int i;

	rvmx_uret_restore(u);
	for (i = 0; i < rvmx_uret_count; i++) {
		rdmsrl(rvmx_uret_msrs[i], u->host[i]);
		u->curr[i] = u->host[i];
	}
#ifdef CONFIG_USER_RETURN_NOTIFIER
	u->urn.on_user_return = rvmx_on_user_return;
#endif
	put_cpu_ptr(&rvmx_uret);
}

/* This CPU goes offline, suspends, reboots, or rvmx unloads. */
void rvmx_glue_uret_drop(void)
{
	rvmx_uret_restore(get_cpu_ptr(&rvmx_uret));
	put_cpu_ptr(&rvmx_uret);
}

/*
 * Gives slot's MSR the guest's value on this CPU until the next return to
 * user mode. Preemption must be off (a guest section). The value has
 * passed the checks the CPU makes (msrs/mod.rs); a WRMSR that faults anyway
 * is -EIO.
 */
int rvmx_glue_uret_set(unsigned int slot, u64 value)
{
	struct rvmx_uret *u = this_cpu_ptr(&rvmx_uret);
	unsigned long flags;
	int r = 0;

	if (slot >= rvmx_uret_count)
		return -EINVAL;
	local_irq_save(flags);
	if (value == u->curr[slot])
		goto out;
	if (wrmsrl_safe(rvmx_uret_msrs[slot], value)) {
		r = -EIO;
		goto out;
	}
	u->curr[slot] = value;
#ifdef CONFIG_USER_RETURN_NOTIFIER
	if (!u->registered) {
		u->registered = true;
		user_return_notifier_register(&u->urn);
	}
#endif
out:
	local_irq_restore(flags);
	return r;
}

/*
 * The start of a guest section: gives every slot its guest value, in one
 * call (the common case, a section after a return to user mode, writes
 * them all; one after an EPT fault or a reschedule, none). Preemption must
 * be off. No interrupt-off section here, as in KVM's
 * kvm_set_user_return_msr: the only interrupt that restores these MSRs is
 * the reboot IPI, after which no guest runs again.
 */
int rvmx_glue_uret_load(const u64 *values, unsigned int count)
{
	struct rvmx_uret *u = this_cpu_ptr(&rvmx_uret);
	unsigned int i;

	if (count > rvmx_uret_count)
		return -EINVAL;
	for (i = 0; i < count; i++) {
		if (values[i] == u->curr[i])
			continue;
		if (wrmsrl_safe(rvmx_uret_msrs[i], values[i]))
			return -EIO;
		u->curr[i] = values[i];
	}
#ifdef CONFIG_USER_RETURN_NOTIFIER
	if (!u->registered) {
		u->registered = true;
		user_return_notifier_register(&u->urn);
	}
#endif
	return 0;
}

/* The end of a guest section (preemption still off). */
void rvmx_glue_uret_section_end(void)
{
#ifndef CONFIG_USER_RETURN_NOTIFIER
	rvmx_uret_restore(this_cpu_ptr(&rvmx_uret));
#endif
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
