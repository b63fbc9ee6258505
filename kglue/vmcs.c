// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/vmcs.c - which VMCSs each CPU holds active, as KVM's
 * loaded_vmcss_on_cpu (arch/x86/kvm/vmx/vmx.c).
 *
 * A vCPU's VMCS stays active on the CPU it last ran on, across exits to
 * userspace and across sleeps, so that the next entry on that CPU is a
 * VMRESUME with nothing reloaded (vmcs/mod.rs). A VMCS may be active on
 * one CPU only: before another CPU makes it current, the CPU that holds it
 * VMCLEARs it (an IPI, waited for). A CPU also VMCLEARs every VMCS it holds
 * before it leaves VMX operation (offline, suspend, reboot, crash, unload),
 * and a VMCS is VMCLEARed wherever it is before its page is freed.
 *
 * This file keeps the per-CPU lists and sends the IPIs; the VMX
 * instructions themselves are Rust's (hw/vmx.rs, rvmx_vmclear/rvmx_vmptrld).
 */
#include <linux/list.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/smp.h>

#include "kglue.h"

struct rvmx_active_vmcs {
	/* In rvmx_active_on_cpu of `cpu` while active. */
	struct list_head node;
	/* The VMCS region's physical address. */
	u64 pa;
	/* The CPU it is active on, or -1: clear (active nowhere). */
	int cpu;
	/* VMLAUNCHed since it was last made active: the next entry is a VMRESUME. */
	bool launched;
};

static DEFINE_PER_CPU(struct list_head, rvmx_active_on_cpu);
/* The VMCS this CPU has current (VMPTRLD), or NULL. */
static DEFINE_PER_CPU(struct rvmx_active_vmcs *, rvmx_current_vmcs);

/* At module load, before any CPU enters VMX operation. */
void rvmx_glue_active_vmcs_init(void)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		INIT_LIST_HEAD(&per_cpu(rvmx_active_on_cpu, cpu));
		per_cpu(rvmx_current_vmcs, cpu) = NULL;
	}
}

struct rvmx_active_vmcs *rvmx_glue_active_vmcs_new(u64 pa)
{
	struct rvmx_active_vmcs *a = kzalloc(sizeof(*a), GFP_KERNEL_ACCOUNT);

	if (a) {
		INIT_LIST_HEAD(&a->node);
		a->pa = pa;
		a->cpu = -1;
	}
	return a;
}

/*
 * On the CPU that holds `a` (IPI context, or interrupts off): VMCLEAR it,
 * which writes its state to memory and makes its launch state "clear", and
 * take it off the CPU's list. As KVM's __loaded_vmcs_clear.
 */
static void rvmx_active_vmcs_clear_here(void *arg)
{
	struct rvmx_active_vmcs *a = arg;
	int cpu = raw_smp_processor_id();

	/* This CPU cleared it already (it went offline in between). */
	if (a->cpu != cpu)
		return;
	rvmx_vmclear(a->pa);
	if (per_cpu(rvmx_current_vmcs, cpu) == a)
		per_cpu(rvmx_current_vmcs, cpu) = NULL;
	list_del(&a->node);
	/*
	 * Off the list before `cpu` says clear: a CPU that reads -1 and adds
	 * `a` to its own list must not find it still on this one.
	 */
	smp_wmb();
	a->launched = false;
	WRITE_ONCE(a->cpu, -1);
}

/* VMCLEARs `a` wherever it is active and waits for it. Interrupts on. */
static void rvmx_active_vmcs_clear(struct rvmx_active_vmcs *a)
{
	int cpu = READ_ONCE(a->cpu);

	/*
	 * A CPU that went offline cleared its VMCSs on the way (so the call
	 * failing with -ENXIO leaves nothing behind).
	 */
	if (cpu != -1)
		smp_call_function_single(cpu, rvmx_active_vmcs_clear_here, a, 1);
}

/* The vCPU is freed: clear its VMCS (sleeps for the IPI), then forget it. */
void rvmx_glue_active_vmcs_free(struct rvmx_active_vmcs *a)
{
	if (!a)
		return;
	rvmx_active_vmcs_clear(a);
	kfree(a);
}

/*
 * With preemption off: makes `a` the current VMCS of this CPU, as KVM's
 * vmx_vcpu_load_vmcs. If it was active on another CPU, that CPU VMCLEARs it
 * first. Returns RVMX_GLUE_VMCS_ARRIVED if it was not active here (its launch
 * state is clear, and the host state that differs per CPU must be written
 * again), 0 if it was, or -EIO if VMPTRLD failed (VMX was turned off under
 * us: a reboot).
 */
int rvmx_glue_active_vmcs_load(struct rvmx_active_vmcs *a)
{
	int cpu = smp_processor_id(), ret = 0;
	unsigned long flags;

	if (READ_ONCE(a->cpu) != cpu) {
		rvmx_active_vmcs_clear(a);
		/* `cpu` (-1) is read before `a` joins this CPU's list. */
		smp_rmb();
		local_irq_save(flags);
		list_add(&a->node, this_cpu_ptr(&rvmx_active_on_cpu));
		WRITE_ONCE(a->cpu, cpu);
		local_irq_restore(flags);
		ret = RVMX_GLUE_VMCS_ARRIVED;
	}
	if (this_cpu_read(rvmx_current_vmcs) != a) {
		/* Before VMPTRLD: an IPI that clears `a` here resets it. */
		this_cpu_write(rvmx_current_vmcs, a);
		if (rvmx_vmptrld(a->pa)) {
			/* VMX is off here: `a` must not stay recorded as active. */
			rvmx_glue_active_vmcs_unload(a);
			return -EIO;
		}
	}
	return ret;
}

/*
 * Preemption off, `a` recorded as active on this CPU: VMCLEAR it here and
 * forget it, so that the next load starts afresh (after a failed VMPTRLD,
 * or host state that could not be written). A VMCLEAR that fails (VMX off)
 * is caught; the record is undone all the same.
 */
void rvmx_glue_active_vmcs_unload(struct rvmx_active_vmcs *a)
{
	unsigned long flags;

	local_irq_save(flags);
	rvmx_active_vmcs_clear_here(a);
	local_irq_restore(flags);
}

/* Whether `a` was VMLAUNCHed on its CPU (preemption off, `a` current). */
bool rvmx_glue_active_vmcs_launched(const struct rvmx_active_vmcs *a)
{
	return a->launched;
}

void rvmx_glue_active_vmcs_set_launched(struct rvmx_active_vmcs *a)
{
	a->launched = true;
}

/*
 * This CPU leaves VMX operation (offline, suspend, reboot, unload):
 * VMCLEAR every VMCS it holds, so that their state is in memory and
 * another CPU may load them, as KVM's vmclear_local_loaded_vmcss. Also
 * called when VMX is off already: the VMCLEARs fail (caught), and the
 * list is emptied all the same.
 */
void rvmx_glue_vmclear_local(void)
{
	struct rvmx_active_vmcs *a, *n;
	unsigned long flags;

	local_irq_save(flags);
	list_for_each_entry_safe(a, n, this_cpu_ptr(&rvmx_active_on_cpu), node)
		rvmx_active_vmcs_clear_here(a);
	this_cpu_write(rvmx_current_vmcs, NULL);
	local_irq_restore(flags);
}

/*
 * The same from the emergency (crash, kexec) callback, in NMI context: the
 * list may be half updated by the code the NMI interrupted, so it is only
 * walked, not changed (KVM's crash_vmclear_local_loaded_vmcss). The next
 * kernel (kdump) then finds every guest's state in memory.
 */
void rvmx_glue_vmclear_local_emergency(void)
{
	struct rvmx_active_vmcs *a;

	list_for_each_entry(a, this_cpu_ptr(&rvmx_active_on_cpu), node)
		rvmx_vmclear(a->pa);
}
