; ac_loop.asm - a guest that would keep a CPU delivering #AC forever
; (CVE-2015-5307; tests/selftests/src/bin/exceptions.rs, "wedge").
; 32-bit protected mode, loaded at 0x1000, started flat by the test. With
; CR0.AM set it drops to ring 3 with EFLAGS.AC set and a misaligned stack,
; and its #AC gate leads to a ring-3 handler (no stack switch): the first
; PUSH raises #AC, whose delivery pushes onto the same misaligned stack,
; which raises #AC again, inside the delivery, with no instruction
; boundary in between. A hypervisor that intercepts #AC sees the second
; one as an exception during event delivery and stops (KVM:
; KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_SIMUL_EX); one that does not
; loses the CPU.
bits 32
org 0x1000
	lgdt [gdtr]
	lidt [idtr]
	mov ax, 0x10
	mov ds, ax
	mov es, ax
	mov ss, ax
	mov esp, 0x8000
	mov eax, cr0
	or eax, 1 << 18			; AM
	mov cr0, eax
	out 0xe1, al			; "here it goes"
	push 0x23			; SS: ring-3 data
	push 0x7001			; a misaligned ring-3 stack
	push 0x40002			; EFLAGS: AC
	push 0x1b			; CS: ring-3 code
	push user
	iretd
user:
	push eax
	jmp $
ac_handler:				; ring 3; never gets to run
	jmp $

align 8
gdt:	dq 0
	dq 0x00cf9a000000ffff		; 0x08: flat 32-bit code, ring 0
	dq 0x00cf92000000ffff		; 0x10: flat data, ring 0
	dq 0x00cffa000000ffff		; 0x18: flat 32-bit code, ring 3
	dq 0x00cff2000000ffff		; 0x20: flat data, ring 3
gdtr:	dw 0x27
	dd gdt
align 8
idt:	times 17 dq 0
	dw ac_handler - $$ + 0x1000	; 17: #AC
	dw 0x1b				; ring-3 code
	dw 0xee00			; 32-bit interrupt gate, DPL 3, present
	dw 0
idtr:	dw 18 * 8 - 1
	dd idt
