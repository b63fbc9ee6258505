; db_loop.asm - a guest that would keep a CPU delivering #DB forever
; (CVE-2015-8104; tests/selftests/src/bin/exceptions.rs, "wedge").
; 64-bit mode, loaded at 0x1000, started in long mode by the test. Its
; #DB gate switches to the stack that IST1 names, and DR0 watches the
; first quadword that delivery pushes there (SS). ICEBP raises the first
; #DB; its delivery writes the watched quadword, so a second #DB is due
; before the handler's first instruction, delivered onto the same stack,
; which trips the breakpoint again... With #DB intercepted each round is
; a VM exit, where the hypervisor sees signals (the test's alarm: KVM_RUN
; returns EINTR); without, the CPU never gets out.
bits 64
org 0x1000
TSS_ADDR equ tss - $$ + 0x1000
	lgdt [gdtr]
	lidt [idtr]
	mov eax, TSS_ADDR
	mov [gdt + 0x18 + 2], ax
	shr eax, 16
	mov [gdt + 0x18 + 4], al
	mov [gdt + 0x18 + 7], ah
	mov ax, 0x18
	ltr ax
	mov rax, ist_top - 8
	mov dr0, rax
	mov rax, 0x90401		; L0, R/W0 = write, LEN0 = 8 bytes
	mov dr7, rax
	out 0xe1, al			; "here it goes"
	db 0xf1				; ICEBP
	jmp $
db_handler:				; never gets to run
	iretq

align 8
gdt:	dq 0
	dq 0x00af9a000000ffff		; 0x08: 64-bit code
	dq 0x00cf92000000ffff		; 0x10: data
	dw 0x67, 0			; 0x18: 64-bit TSS (base filled in above)
	db 0, 0x89, 0, 0
	dq 0
gdtr:	dw 0x27
	dq gdt
align 16
idt:	times 2 dq 0
	dw db_handler - $$ + 0x1000	; 1: #DB, offset 15:0
	dw 0x08
	db 1				; IST1
	db 0x8e				; 64-bit interrupt gate, present
	dw 0
	dq 0
idtr:	dw 2 * 16 - 1
	dq idt
align 8
tss:	dd 0
	dq 0, 0, 0			; RSP0-2
	dq 0
	dq ist_top			; IST1
	times 6 dq 0
	dq 0
	dw 0, 0x68
align 16
	times 128 db 0
ist_top:
