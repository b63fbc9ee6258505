; firmware.asm - the qemu_abi test's guest: real mode at 0000:1000, the way
; firmware (SeaBIOS) and an early Linux boot meet the CPU. It installs a #GP
; handler in the real-mode IVT (vector 13), then:
;  1. INVD, MONITOR, MWAIT: each runs to the next instruction (both
;     hypervisors skip them);
;  2. RDPMC of counter 0: #GP (no performance-monitoring unit);
;  3. RDMSR MTRRcap, reported with OUT 0x10;
;  4. RDMSR MCG_CAP, reported with OUT 0x11;
;  5. WRMSR MTRRdefType = 0xc06 (write-back, enabled), read back: OUT 0x12;
;  6. WRMSR MC0_STATUS = 1: #GP (only 0 may be written by the guest);
;  7. Linux's microcode-revision read: WRMSR BIOS_SIGN_ID = 0, RDMSR; the
;     revision (EDX) with OUT 0x14;
;  8. WRMSR DEBUGCTL = 2 (BTF: accepted, dropped), read back: OUT 0x15;
;  9. RDMSR MISC_ENABLE: OUT 0x16;
; 10. OUT 0x13 with the number of #GPs taken (2), then HLT.
; The #GP handler skips the 2-byte RDPMC or WRMSR that faulted.
bits 16
org 0x1000
	xor ax, ax
	mov ds, ax
	mov ss, ax
	mov sp, 0x8000
	mov word [13 * 4], gp_handler	; IVT entry 13: offset, segment 0
	mov word [13 * 4 + 2], 0
	mov dword [0x504], 0		; #GP count
	invd
	mov eax, 0x600			; MONITOR's address (DS:EAX)
	xor ecx, ecx
	xor edx, edx
	monitor
	xor eax, eax
	mwait
	xor ecx, ecx			; counter 0
	rdpmc
	mov ecx, 0xfe			; IA32_MTRRCAP
	rdmsr
	out 0x10, eax
	mov ecx, 0x179			; IA32_MCG_CAP
	rdmsr
	out 0x11, eax
	mov ecx, 0x2ff			; IA32_MTRR_DEF_TYPE
	mov eax, 0xc06
	xor edx, edx
	wrmsr
	xor eax, eax
	rdmsr
	out 0x12, eax
	mov ecx, 0x401			; IA32_MC0_STATUS
	mov eax, 1
	xor edx, edx
	wrmsr
	mov ecx, 0x8b			; IA32_BIOS_SIGN_ID
	xor eax, eax
	xor edx, edx
	wrmsr
	rdmsr
	mov eax, edx
	out 0x14, eax
	mov ecx, 0x1d9			; IA32_DEBUGCTL
	mov eax, 2			; BTF
	xor edx, edx
	wrmsr
	rdmsr
	out 0x15, eax
	mov ecx, 0x1a0			; IA32_MISC_ENABLE
	rdmsr
	out 0x16, eax
	mov eax, [0x504]
	out 0x13, eax
	hlt

gp_handler:
	push bp
	mov bp, sp
	add word [bp + 2], 2		; the faulting RDPMC or WRMSR
	inc dword [0x504]
	pop bp
	iret
