// SPDX-License-Identifier: GPL-2.0
/*
 * kglue.c - kernel services that Linux 6.12's Rust bindings cannot reach.
 *
 * 6.12 has no Rust miscdevice abstraction, and the CPU-hotplug, CR4-shadow,
 * reboot and module-notifier interfaces are static inlines or macros that
 * bindgen does not see.  Each function here is a thin, policy-free wrapper;
 * every decision about VMX is made in Rust (vmxon.rs, dev.rs).
 */
#include <linux/cpuhotplug.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/reboot.h>
#include <linux/smp.h>
#include <asm/reboot.h>
#include <asm/special_insns.h>
#include <asm/io.h>
#include <asm/tlbflush.h>

#include "kglue.h"

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
	return 0;
}

void rvmx_glue_guards_unregister(void)
{
	cpu_emergency_unregister_virt_callback(rvmx_emergency_vmxoff);
	unregister_reboot_notifier(&rvmx_reboot_nb);
	unregister_module_notifier(&rvmx_module_nb);
}

void rvmx_glue_on_each_cpu(void (*fn)(void *))
{
	on_each_cpu(fn, NULL, 1);
}
