// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/cpu.c - the CPUs around VMX operation: CR4.VMXE through the
 * kernel's CR4 shadow, CPU hotplug, leaving VMX on reboot, kexec, crash
 * and suspend, and refusing KVM while rvmx holds VMX. What to do on each
 * CPU is decided in Rust (vmxon.rs, guards.rs).
 */
#include <linux/cpuhotplug.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/ratelimit.h>
#include <linux/reboot.h>
#include <linux/smp.h>
#include <linux/syscore_ops.h>
#include <asm/reboot.h>
#include <asm/tlbflush.h>

#include "kglue.h"

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

static void rvmx_kick_noop(void *info)
{
}

/*
 * Interrupts each online CPU for which cond(cpu, info) holds, and waits until
 * each has taken the interrupt. A CPU running a guest takes it only after the
 * VM exit it causes (external-interrupt exiting), so the return means each
 * chosen CPU has left the guest once since cond() was asked (vm.rs,
 * RemoteFlush). Only those CPUs are waited for, never every CPU.
 */
void rvmx_glue_kick_cpus(bool (*cond)(int cpu, void *info), void *info)
{
	on_each_cpu_cond(cond, rvmx_kick_noop, info, true);
}

unsigned int rvmx_glue_num_online_cpus(void)
{
	return num_online_cpus();
}
