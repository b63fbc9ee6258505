; msr.asm - the MSR test's guest: 32-bit protected mode (flat CS 0x08, data
; 0x10, set by the test), paging off, loaded at 0x1000. It loads its own
; GDT and an IDT with a #GP handler, then:
;  1. RDMSR of an MSR that does not exist: #GP(0); the handler stores the
;     vector and error code at 0x500/0x504 and skips the 2-byte RDMSR;
;  2. WRMSR LSTAR = 0xffffffff_81234560, RDMSR it back, and reports
;     EDX:EAX with OUT 0x10 (EAX) and OUT 0x11 (EDX);
;  3. WRMSR of a non-canonical KERNEL_GS_BASE: #GP(0) again (counted at 0x508);
;  4. XSETBV of XCR0 = 3 (x87 and SSE; the test set CR4.OSXSAVE), then of
;     XCR0 = 2 (SSE without x87, invalid): #GP(0) once more;
;  5. HLT.
; The #GP handler skips the faulting instruction by the length stored at
; 0x50c before it.
bits 32
org 0x1000
	lgdt [gdtr]
	lidt [idtr]
	mov dword [0x50c], 2		; RDMSR and WRMSR are 2 bytes long
	mov ecx, 0x12345678		; no such MSR
	rdmsr
	mov ecx, 0xc0000082		; IA32_LSTAR
	mov eax, 0x81234560
	mov edx, 0xffffffff
	wrmsr
	xor eax, eax
	xor edx, edx
	rdmsr
	out 0x10, eax
	mov eax, edx
	out 0x11, eax
	mov ecx, 0xc0000102		; IA32_KERNEL_GS_BASE
	xor eax, eax
	mov edx, 0x00008000		; bit 47 set, 63:48 clear: not canonical
	wrmsr
	mov dword [0x50c], 3		; XSETBV is 3 bytes long
	xor ecx, ecx			; XCR0
	xor edx, edx
	mov eax, 3			; x87 | SSE
	xsetbv
	mov eax, 2			; SSE alone: invalid
	xsetbv
	hlt

gp_handler:
	mov dword [0x500], 13
	pop dword [0x504]		; the error code
	inc dword [0x508]
	push eax
	mov eax, [0x50c]
	add [esp + 4], eax		; skip the faulting instruction
	pop eax
	iretd

%include "flat32.inc"
align 8
idt:	times 13 dq 0
	dw gp_handler			; vector 13 (#GP): offset 15:0 (the
	dw 0x08				; handler is below 64 KiB), selector,
	dw 0x8e00			; 32-bit interrupt gate, present
	dw 0				; offset 31:16
idtr:	dw 14 * 8 - 1
	dd idt
