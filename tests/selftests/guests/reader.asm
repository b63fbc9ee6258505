; reader.asm - the slot-change test's guest (real mode, at 0x1000): reads
; the dword at 0x9000:0 (GPA 0x90000, a slot the test replaces while this
; runs) and reports it with OUT to port 0x10, forever.
bits 16
org 0x1000
	mov ax, 0x9000
	mov es, ax
again:
	mov eax, [es:0]
	out 0x10, eax
	jmp again
