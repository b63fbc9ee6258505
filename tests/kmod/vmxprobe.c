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
 * insmod vmxprobe.ko tag=T hoststate=1    prints instead, for every online CPU,
 *     "vmxprobe T: cpuN hoststate efer=... dr7=... debugctl=..."
 * the registers a guest must never leave changed (the MSRs VMX does not
 * switch or that rvmx switches itself, DR7, DEBUGCTL, XCR0, CR0, CR4 without
 * its per-task bits), and fails to load the same way: tests/guest/vm.sh
 * compares the lines from before and after the hostile guests.
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
#include <asm/debugreg.h>
#include <asm/msr.h>
#include <asm/fpu/xcr.h>

static char *tag = "";
module_param(tag, charp, 0444);
static bool hold_vmxe;
module_param(hold_vmxe, bool, 0444);
static bool hoststate;
module_param(hoststate, bool, 0444);

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

static void report_hoststate(void *unused)
{
	u64 efer, star, lstar, cstar, fmask, cs, esp, eip, pat, debugctl;
	u64 xcr0 = boot_cpu_has(X86_FEATURE_OSXSAVE) ? xgetbv(0) : 0;
	/*
	 * DR7 must be what the kernel's breakpoint code set (cpu_dr7), or the
	 * reset value if that has no breakpoint enabled; bits 8-10 are left
	 * out: bit 10 is fixed to 1 and the kernel leaves GE (bit 9) set
	 * after a breakpoint was removed, where a VM exit clears it.
	 */
	unsigned long dr7 = native_get_debugreg(7) & ~0x700UL;
	bool dr7_kernel = dr7 == (this_cpu_read(cpu_dr7) & ~0x700UL);
	rdmsrl(MSR_EFER, efer);
	rdmsrl(MSR_STAR, star);
	rdmsrl(MSR_LSTAR, lstar);
	rdmsrl(MSR_CSTAR, cstar);
	rdmsrl(MSR_SYSCALL_MASK, fmask);
	rdmsrl(MSR_IA32_SYSENTER_CS, cs);
	rdmsrl(MSR_IA32_SYSENTER_ESP, esp);
	rdmsrl(MSR_IA32_SYSENTER_EIP, eip);
	rdmsrl(MSR_IA32_CR_PAT, pat);
	rdmsrl(MSR_IA32_DEBUGCTLMSR, debugctl);
	pr_info("vmxprobe %s: cpu%d hoststate efer=%llx star=%llx lstar=%llx cstar=%llx fmask=%llx sysenter=%llx/%llx/%llx pat=%llx debugctl=%llx dr7=%s%lx xcr0=%llx cr0=%lx cr4=%lx\n",
		tag, smp_processor_id(), efer, star, lstar, cstar, fmask, cs, esp,
		eip, pat, debugctl, dr7_kernel ? "kernel's:" : "NOT-the-kernel's:", dr7,
		xcr0, read_cr0(),
		__read_cr4() & ~(X86_CR4_TSD | X86_CR4_PCE));
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
	on_each_cpu(hoststate ? report_hoststate : report, NULL, 1);
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
