; strio.asm - the string-I/O segment-type guest of cpu_rules: 32-bit
; protected mode (flat CS 0x08, data 0x10, set by the test), paging off,
; loaded at 0x1000. Each probe n (1-6) stores n at 0x510 and the length of
; its I/O instruction at 0x50c; the #GP handler records vector 13 and the
; error code at 0x520 + 4n and 0x540 + 4n and skips the instruction.
; Port 0x20; OUTS read 0x600, INS writes 0x700.
;  1. OUTSB with DS = read-only data (0x20): allowed, an OUT exit
;  2. CS: OUTSB with CS = execute-only code (0x18): #GP(0)
;  3. CS: OUTSB with CS = execute/read code (0x08): allowed
;  4. INSB into ES = read-only data (0x20): #GP(0)
;  5. INSB into ES = execute/read code (0x28): #GP(0)
;  6. INSB into ES = read/write data (0x10): allowed, an IN exit
; then HLT. (INS always writes through ES: no prefix overrides it.)
bits 32
org 0x1000
	lgdt [gdtr]
	lidt [idtr]
	mov ax, 0x10
	mov ds, ax
	mov es, ax
	mov ss, ax
	mov esp, 0x8000
	mov dx, 0x20
	cld

	mov dword [0x510], 1
	mov dword [0x50c], 1
	mov ax, 0x20
	mov ds, ax
	mov esi, 0x600
	outsb
	mov ax, 0x10
	mov ds, ax

	mov dword [0x510], 2
	mov dword [0x50c], 2
	jmp 0x18:xo
xo:	mov esi, 0x600
	cs outsb
	jmp 0x08:back
back:
	mov dword [0x510], 3
	mov esi, 0x600
	cs outsb

	mov dword [0x510], 4
	mov dword [0x50c], 1
	mov ax, 0x20
	mov es, ax
	mov edi, 0x700
	insb

	mov dword [0x510], 5
	mov ax, 0x28
	mov es, ax
	mov edi, 0x700
	insb

	mov dword [0x510], 6
	mov ax, 0x10
	mov es, ax
	mov edi, 0x700
	insb
	hlt

gp_handler:
	push eax
	push ebx
	push ds
	mov ax, 0x10
	mov ds, ax
	mov ebx, [0x510]
	mov dword [0x520 + ebx * 4], 13
	mov eax, [esp + 12]		; the error code
	mov [0x540 + ebx * 4], eax
	mov eax, [0x50c]
	add [esp + 16], eax		; skip the I/O instruction
	pop ds
	pop ebx
	pop eax
	add esp, 4			; drop the error code
	iretd

align 8
gdt:	dq 0
	dq 0x00cf9a000000ffff		; 0x08: flat 32-bit code, execute/read
	dq 0x00cf92000000ffff		; 0x10: flat data, read/write
	dq 0x00cf98000000ffff		; 0x18: flat 32-bit code, execute-only
	dq 0x00cf90000000ffff		; 0x20: flat data, read-only
	dq 0x00cf9a000000ffff		; 0x28: flat 32-bit code, execute/read
gdtr:	dw 6 * 8 - 1
	dd gdt
align 8
idt:	times 13 dq 0
	dw gp_handler			; vector 13 (#GP)
	dw 0x08
	dw 0x8e00
	dw 0
idtr:	dw 14 * 8 - 1
	dd idt
