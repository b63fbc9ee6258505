; irq.asm - the interrupt test's guest (real mode, at 0x1000). Vector 0x20's
; handler counts interrupts in the word at 0x500. The main loop tells the
; VMM (OUT to port 0x10) while interrupts are off, turns them on, and
; waits; the VMM asks for an interrupt window, gets it after the NOP, and
; injects vector 0x20 with KVM_INTERRUPT.
bits 16
org 0x1000
	mov word [0x20 * 4], handler	; IVT entry of vector 0x20: offset,
	mov word [0x20 * 4 + 2], 0	; segment
main:
	cli
	out 0x10, al			; the VMM sees IF = 0: not ready
	sti
	nop				; the STI shadow ends here: window open
	hlt
	jmp main
handler:
	inc word [0x500]
	iret
