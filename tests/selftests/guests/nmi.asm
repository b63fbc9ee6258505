; nmi.asm - the NMI test's guest (real mode, at 0x1000). Vector 2's handler
; counts NMIs in the word at 0x500. Interrupts stay off (CLI): IF does not
; mask NMIs. The guest halts; each KVM_NMI the VMM sends before the next
; KVM_RUN is delivered, the handler returns, and the guest halts again.
bits 16
org 0x1000
	mov word [2 * 4], handler	; IVT entry of vector 2 (NMI): offset,
	mov word [2 * 4 + 2], 0		; segment
	cli
again:
	hlt
	jmp again
handler:
	inc word [0x500]
	iret
