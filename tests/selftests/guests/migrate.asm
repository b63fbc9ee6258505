; migrate.asm - the migration stress test's guest (real mode, at 0x1000):
; ECX rounds of LOCK XADD on the counter at 0x600, a CPUID (a VM exit the
; kernel handles) and, every 16th round, an OUT to port 0x10 (an exit to
; userspace). The test moves the vCPU threads between host CPUs meanwhile.
bits 16
org 0x1000
again:
	mov eax, 1
	lock xadd [0x600], eax
	mov ebp, ecx			; CPUID overwrites ECX (and the vCPUs
	xor eax, eax			; share one stack: no PUSH/POP here)
	cpuid
	mov ecx, ebp
	test cl, 15
	jnz .next
	out 0x10, al
.next:
	dec ecx
	jnz again
	hlt
