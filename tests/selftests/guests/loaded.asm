; loaded.asm - the loaded-vCPU test's guest (real mode, at 0x1000, CR4.OSFXSR
; set by the test). The VMM set ESI, EDI, EBP and put 128 bytes at 0x800,
; which the guest loads into XMM0-7 first. Then it loops: RDTSC, which must never go back (its
; last value at 0x700); ESI, EDI, EBP and XMM0-7 checked against their
; values; an OUT to port 0x10 (an exit to userspace, after which the test
; may move the thread to another host CPU); an IN from port 0x11: 0 goes
; round again, anything else halts. A failed check writes its number to
; port 0x12 and halts (1: the TSC went back; 2: a register; 3: an XMM
; register).
bits 16
org 0x1000
	movdqu xmm0, [0x800]
	movdqu xmm1, [0x810]
	movdqu xmm2, [0x820]
	movdqu xmm3, [0x830]
	movdqu xmm4, [0x840]
	movdqu xmm5, [0x850]
	movdqu xmm6, [0x860]
	movdqu xmm7, [0x870]
	rdtsc
	mov [0x700], eax
	mov [0x704], edx
again:
	rdtsc
	cmp edx, [0x704]
	jb tsc_back
	ja tsc_ok
	cmp eax, [0x700]
	jb tsc_back
tsc_ok:
	mov [0x700], eax
	mov [0x704], edx
	cmp esi, 0x12345678
	jne regs_lost
	cmp edi, 0x9abcdef0
	jne regs_lost
	cmp ebp, 0x0f1e2d3c
	jne regs_lost
	; XMM0-7 to 0x900, compared with the copies at 0x800.
	movdqu [0x900], xmm0
	movdqu [0x910], xmm1
	movdqu [0x920], xmm2
	movdqu [0x930], xmm3
	movdqu [0x940], xmm4
	movdqu [0x950], xmm5
	movdqu [0x960], xmm6
	movdqu [0x970], xmm7
	push esi
	push edi
	cld
	mov si, 0x800
	mov di, 0x900
	mov cx, 128
	repe cmpsb
	pop edi
	pop esi
	jne xmm_lost
	out 0x10, al
	in al, 0x11
	test al, al
	jz again
	hlt
tsc_back:
	mov al, 1
	jmp fail
regs_lost:
	mov al, 2
	jmp fail
xmm_lost:
	mov al, 3
fail:
	out 0x12, al
	hlt
