// SPDX-License-Identifier: GPL-2.0
/*
 * vmxprobe.c - a test module that looks at VMX from outside rvmx.
 *
 * insmod vmxprobe.ko tag=T    prints, for every online CPU,
 *     "vmxprobe T: cpuN cr4.vmxe=V vmx_root=R"
 * and fails to load (-ECANCELED) so it leaves nothing behind.
 *   cr4.vmxe  CR4.VMXE as the hardware has it (and the kernel's shadow must
 *             agree: a mismatch is printed as "shadow-mismatch")
 *   vmx_root  whether the CPU is in VMX operation: VMPTRST succeeds there
 *             and raises #UD anywhere else (caught by the exception table).
 *
 * insmod vmxprobe.ko hold_vmxe=1    sets CR4.VMXE on every CPU (through the
 * kernel's CR4 accessors) and stays loaded, pretending to be another
 * hypervisor that owns VMX; rmmod clears it again.
 */
#include <linux/module.h>
#include <linux/smp.h>
#include <asm/asm.h>
#include <asm/special_insns.h>
#include <asm/tlbflush.h>

static char *tag = "";
module_param(tag, charp, 0444);
static bool hold_vmxe;
module_param(hold_vmxe, bool, 0444);

static bool in_vmx_operation(void)
{
	u64 ptr;

	asm goto("1: vmptrst %0\n\t"
		 _ASM_EXTABLE(1b, %l[ud])
		 : "=m"(ptr) : : "cc", "memory" : ud);
	return true;
ud:
	return false;
}

static void report(void *unused)
{
	unsigned long raw = __read_cr4(), shadow = cr4_read_shadow();

	pr_info("vmxprobe %s: cpu%d cr4.vmxe=%d vmx_root=%d%s\n", tag,
		smp_processor_id(), !!(raw & X86_CR4_VMXE),
		(raw & X86_CR4_VMXE) ? in_vmx_operation() : 0,
		((raw ^ shadow) & X86_CR4_VMXE) ? " shadow-mismatch" : "");
}

static void set_vmxe(void *unused)
{
	cr4_set_bits(X86_CR4_VMXE);
}

static void clear_vmxe(void *unused)
{
	cr4_clear_bits(X86_CR4_VMXE);
}

static int __init vmxprobe_init(void)
{
	if (hold_vmxe) {
		on_each_cpu(set_vmxe, NULL, 1);
		return 0;
	}
	on_each_cpu(report, NULL, 1);
	return -ECANCELED;
}

static void __exit vmxprobe_exit(void)
{
	on_each_cpu(clear_vmxe, NULL, 1);
}

module_init(vmxprobe_init);
module_exit(vmxprobe_exit);
MODULE_DESCRIPTION("rvmx test helper: report or hold CR4.VMXE");
MODULE_LICENSE("GPL");
