; touch.asm - make bench's memory guest (32-bit protected mode, flat
; segments, paging off, at 0x1000): writes one byte every EDX bytes, EBP
; times, starting at ESI; then OUT to port 0x10, and the same again when
; the VMM runs it again (the next round).
bits 32
org 0x1000
top:
	mov edi, esi
	mov ecx, ebp
.next:
	inc byte [edi]
	add edi, edx
	dec ecx
	jnz .next
	out 0x10, al
	jmp top
