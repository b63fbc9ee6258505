; exits.asm - the benchmark's guest (real mode, at 0x1000): ECX rounds of
; one VM-exiting instruction, chosen by EBX: 0 = CPUID (handled in the
; kernel), 1 = OUT to port 0x10 (handled in userspace). Then HLT.
bits 16
org 0x1000
	mov ebp, ecx
	test ebx, ebx
	jnz outs
cpuids:
	xor eax, eax
	cpuid
	dec ebp
	jnz cpuids
	hlt
outs:
	out 0x10, al
	dec ebp
	jnz outs
	hlt
