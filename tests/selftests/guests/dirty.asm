; dirty.asm - the dirty-logging test's guest (real mode, at 0x1000). The
; test puts a list of segment values at 0x700 (0-terminated); the guest
; increments the first byte of each segment (one byte of one page each),
; then reports with OUT to port 0x10 and starts over with the next list.
bits 16
org 0x1000
top:
	mov si, 0x700
.next:
	mov ax, [si]
	test ax, ax
	jz .done
	mov es, ax
	inc byte [es:0]
	add si, 2
	jmp .next
.done:
	out 0x10, al
	jmp top
