; sse.asm - the FPU test's guest (real mode, at 0x1000, CR4.OSFXSR set by
; the test). XMM0-7 hold what the VMM set with KVM_SET_FPU; the guest only
; makes ECX rounds of VM exits (CPUID, handled in the kernel, and OUT to
; port 0x10, handled in userspace) while the test moves its thread between
; host CPUs, then stores XMM0-7 at 0x800 and halts: they must still hold
; the VMM's values.
bits 16
org 0x1000
again:
	mov ebp, ecx
	xor eax, eax
	cpuid
	out 0x10, al
	mov ecx, ebp
	dec ecx
	jnz again
	movdqu [0x800], xmm0
	movdqu [0x810], xmm1
	movdqu [0x820], xmm2
	movdqu [0x830], xmm3
	movdqu [0x840], xmm4
	movdqu [0x850], xmm5
	movdqu [0x860], xmm6
	movdqu [0x870], xmm7
	hlt
