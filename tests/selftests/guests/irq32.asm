; irq32.asm - the interrupt test's guest in 32-bit protected mode (flat CS
; 0x08 and data 0x10, set by the test; loaded at 0x1000). Its IDT sends
; vector 0x20 to a handler that counts interrupts in the dword at 0x500.
; The main loop is irq.asm's: tell the VMM with IF = 0 (OUT to port 0x10),
; STI, a NOP for the STI shadow to end, HLT, again.
bits 32
org 0x1000
	lgdt [gdtr]
	lidt [idtr]
main:
	cli
	out 0x10, al
	sti
	nop
	hlt
	jmp main

handler:
	inc dword [0x500]
	iretd

%include "flat32.inc"
align 8
idt:	times 0x20 dq 0
	dw handler			; vector 0x20: offset 15:0,
	dw 0x08				; selector,
	dw 0x8e00			; 32-bit interrupt gate, present,
	dw 0				; offset 31:16
idtr:	dw 0x21 * 8 - 1
	dd idt
