; pageout.asm - the mapping test's swap guest (32-bit protected mode, flat
; segments, paging off, at 0x1000): stores its count in the first dword of
; EBP pages from ESI on (EBP, EBP-1, ... 1), OUT to port 0x10 (the VMM then
; pages that memory out with MADV_PAGEOUT), reads every page back and says
; with OUT to port 0x11 that each still holds its value, or to port 0x12
; that one does not (EDI then points at it).
bits 32
org 0x1000
	mov edi, esi
	mov ecx, ebp
.store:
	mov [edi], ecx
	add edi, 4096
	dec ecx
	jnz .store
	out 0x10, al
	mov edi, esi
	mov ecx, ebp
.check:
	cmp [edi], ecx
	jne .bad
	add edi, 4096
	dec ecx
	jnz .check
	out 0x11, al
	hlt
.bad:
	out 0x12, al
	hlt
