; count.asm - the SMP test's guest (real mode, loaded at 0x1000): adds 1 to
; the 32-bit counter at 0x600 ECX times with LOCK XADD, then halts. Every
; vCPU runs this same code at once; the total must be exact.
bits 16
org 0x1000
again:
	mov eax, 1
	lock xadd [0x600], eax
	dec ecx
	jnz again
	hlt
