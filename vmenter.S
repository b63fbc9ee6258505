/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmenter.S - the VM entry and the VM exit: the only assembly in rvmx that
 * crosses between the host (VMX root) and the guest (VMX non-root).
 *
 * int rvmx_vmenter(unsigned long *regs, unsigned int resume,
 *                  unsigned long *host_rsp)
 *
 *   regs      the guest's general-purpose registers, in KVM's order
 *             (RAX RCX RDX RBX RSP RBP RSI RDI R8..R15; the RSP slot is
 *             unused: the CPU switches RSP from the VMCS guest-state area)
 *   resume    0: VMLAUNCH (first entry since VMCLEAR), else VMRESUME
 *   host_rsp  rvmx's cache of the VMCS HOST_RSP field: rewritten only when
 *             this call's stack pointer differs from it
 *
 * Returns 0 after a VM exit (guest registers saved to regs), 1 if VMLAUNCH
 * or VMRESUME failed (VMfailValid/VMfailInvalid: the guest never ran), 2 if
 * it faulted (VMX was turned off under us, e.g. by an emergency reboot).
 *
 * Why assembly: a VM exit does not return to the instruction after
 * VMLAUNCH; the CPU loads RIP from the VMCS HOST_RIP field (rvmx_vmexit
 * below) and RSP from HOST_RSP, and every general-purpose register still
 * holds the guest's value. Only assembly can save those before any
 * compiler-generated code runs. What is saved and restored:
 *   - callee-saved host registers (RBP, RBX, R12-R15): pushed here,
 *     popped on the way out;
 *   - the regs pointer: pushed, so that the exit path finds it at (%rsp);
 *   - everything else the host needs (CR3, segment bases, GDTR/IDTR,
 *     SYSENTER MSRs, EFER, PAT) the CPU loads from the VMCS host-state area.
 * Guest values left in registers are zeroed before returning, so they
 * cannot be used speculatively by the host.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/percpu.h>

#define WORD 8
#define R_RAX  (0 * WORD)
#define R_RCX  (1 * WORD)
#define R_RDX  (2 * WORD)
#define R_RBX  (3 * WORD)
#define R_RBP  (5 * WORD)
#define R_RSI  (6 * WORD)
#define R_RDI  (7 * WORD)
#define R_R8   (8 * WORD)
#define R_R9   (9 * WORD)
#define R_R10 (10 * WORD)
#define R_R11 (11 * WORD)
#define R_R12 (12 * WORD)
#define R_R13 (13 * WORD)
#define R_R14 (14 * WORD)
#define R_R15 (15 * WORD)

/* VMCS field encoding of HOST_RSP (SDM Vol. 3D, Appendix B.4.4). */
#define VMCS_HOST_RSP 0x6c14

.section .text, "ax"

SYM_FUNC_START(rvmx_vmenter)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	/* @regs, for the exit path: it will be at (%rsp) when the guest exits. */
	push %rdi

	/* HOST_RSP must be this RSP: the CPU loads it at every VM exit. */
	cmp %rsp, (%rdx)
	je 1f
	mov %rsp, (%rdx)
	mov $VMCS_HOST_RSP, %rcx
	vmwrite %rsp, %rcx
1:
	mov %rdi, %rax
	/* CF := resume != 0; the MOVs below leave the flags alone. */
	cmp $1, %esi
	cmc

	mov R_RCX(%rax), %rcx
	mov R_RDX(%rax), %rdx
	mov R_RBX(%rax), %rbx
	mov R_RBP(%rax), %rbp
	mov R_RSI(%rax), %rsi
	mov R_RDI(%rax), %rdi
	mov R_R8(%rax),  %r8
	mov R_R9(%rax),  %r9
	mov R_R10(%rax), %r10
	mov R_R11(%rax), %r11
	mov R_R12(%rax), %r12
	mov R_R13(%rax), %r13
	mov R_R14(%rax), %r14
	mov R_R15(%rax), %r15
	/* Guest RAX last: this overwrites the @regs pointer. */
	mov R_RAX(%rax), %rax

	/*
	 * Clear the CPU's buffers (MDS and relatives) where the kernel does so
	 * on its own return to user mode: VERW, patched in at module load by
	 * the kernel's alternatives. Clobbers ZF only: CF (VMRESUME or not)
	 * survives.
	 */
	CLEAR_CPU_BUFFERS

	jnc .Lvmlaunch

	/*
	 * A successful VMRESUME/VMLAUNCH "returns" at rvmx_vmexit below, via
	 * the VMCS HOST_RIP field: tell objtool to carry the unwind state there.
	 */
	UNWIND_HINT_SAVE
.Lvmresume:
	vmresume
	jmp .Lvmfail
.Lvmlaunch:
	vmlaunch
	jmp .Lvmfail

	_ASM_EXTABLE(.Lvmresume, .Lfault)
	_ASM_EXTABLE(.Lvmlaunch, .Lfault)

/* The VM exit: the CPU comes here (HOST_RIP) with HOST_RSP loaded. */
SYM_INNER_LABEL_ALIGN(rvmx_vmexit, SYM_L_GLOBAL)
	UNWIND_HINT_RESTORE
	ENDBR
	push %rax			/* guest RAX, for a moment */
	mov WORD(%rsp), %rax		/* @regs */
	pop R_RAX(%rax)
	mov %rcx, R_RCX(%rax)
	mov %rdx, R_RDX(%rax)
	mov %rbx, R_RBX(%rax)
	mov %rbp, R_RBP(%rax)
	mov %rsi, R_RSI(%rax)
	mov %rdi, R_RDI(%rax)
	mov %r8,  R_R8(%rax)
	mov %r9,  R_R9(%rax)
	mov %r10, R_R10(%rax)
	mov %r11, R_R11(%rax)
	mov %r12, R_R12(%rax)
	mov %r13, R_R13(%rax)
	mov %r14, R_R14(%rax)
	mov %r15, R_R15(%rax)
	xor %ebx, %ebx			/* return 0: VM exit */

.Lout:
	pop %rax			/* discard @regs */
	/* No guest value survives in a register the host might speculate on. */
	xor %eax, %eax
	xor %ecx, %ecx
	xor %edx, %edx
	xor %ebp, %ebp
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d,  %r8d
	xor %r9d,  %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d

	/*
	 * The guest may have filled the return-stack buffer: refill it. This,
	 * the SPEC_CTRL write and the branch-history clearing below must come
	 * before the first RET without its CALL (KVM's __vmx_vcpu_run).
	 */
	FILL_RETURN_BUFFER %rcx, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT, \
			   X86_FEATURE_RSB_VMEXIT_LITE

	/*
	 * Legacy IBRS (the host sets SPEC_CTRL.IBRS on each kernel entry, no
	 * eIBRS): IBRS protects only if written after the switch from the less
	 * privileged predictor mode, the guest's, so write the host's value
	 * back now, as KVM's vmx_spec_ctrl_restore_host does. The guest cannot
	 * write SPEC_CTRL (rvmx does not offer it), so on other hosts the MSR
	 * still holds the host's value. Patched in at load by alternatives.
	 */
	ALTERNATIVE "jmp .Lspec_ctrl_done", "", X86_FEATURE_KERNEL_IBRS
	mov $MSR_IA32_SPEC_CTRL, %ecx
	mov PER_CPU_VAR(x86_spec_ctrl_current), %eax
	mov PER_CPU_VAR(x86_spec_ctrl_current + 4), %edx
	wrmsr
	lfence
.Lspec_ctrl_done:

	/*
	 * Spectre-BHI: where the host clears the branch history on VM exit
	 * (X86_FEATURE_CLEAR_BHB_LOOP_ON_VMEXIT, spectre_bhi=vmexit or a CPU
	 * without BHI_DIS_S), run the kernel's clear_bhb_loop, as KVM's
	 * CLEAR_BRANCH_HISTORY_VMEXIT. It clobbers RAX and RCX only.
	 */
	CLEAR_BRANCH_HISTORY_VMEXIT

	mov %rbx, %rax
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

.Lfault:
	mov $2, %ebx
	jmp .Lout
.Lvmfail:
	mov $1, %ebx
	jmp .Lout
SYM_FUNC_END(rvmx_vmenter)
