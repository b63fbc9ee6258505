; debug.asm - exceptions the hypervisor delivers itself, as the CPU would
; (tests/selftests/src/bin/exceptions.rs). 32-bit protected mode, paging
; off, loaded at 0x1000; the test starts it in flat protected mode. Each
; step arms [resume], then raises one exception; the common handler
; reports it on port 0xe0 as six dwords: vector, error code, the EIP and
; EFLAGS of the frame, DR6 and DR7 (read in the handler), then resets DR6
; and goes on at [resume] on a fresh ring-0 stack. Port 0xe1 marks each
; step, port 0xe2 the end. The dwords at 0x1004 give the test the
; addresses it expects in the frames.
;   1 single step over a NOP (TF set by POPFD): #DB after the NOP, DR6.BS
;   2 single step over CPUID, an instruction the hypervisor emulates: the
;     same #DB after the CPUID
;   3 MOV to CR4 setting VMXE (no VMX in the guest's CPUID): #GP(0) that
;     the hypervisor injects, EFLAGS.RF set in the frame (a fault)
;   4 MOV from DR0 with DR7.GD set: #DB (DR6.BD) at the MOV, GD clear in
;     the handler
;   5 ICEBP (INT1): #DB after it
;   6 HLT with TF set (and IF): the HLT exit goes to the VMM, and the
;     #DB after the HLT comes when the vCPU runs again (DR6.BS)
;   7 a misaligned load in ring 3 with CR0.AM and EFLAGS.AC: #AC(0) at the
;     load, into a ring-0 handler (TSS stack), RF set
bits 32
org 0x1000
TSS_ADDR equ tss - $$ + 0x1000
	jmp short start
align 4, db 0
	dd after_nop, after_cpuid, mov_cr4, mov_dr0, after_icebp, after_hlt, misaligned

start:
	lgdt [gdtr]
	lidt [idtr]
	mov ax, 0x10
	mov ds, ax
	mov es, ax
	mov ss, ax
	mov esp, stack_top
	; The TSS descriptor's base, filled in here (nasm cannot split a label).
	mov eax, TSS_ADDR
	mov [gdt + 0x28 + 2], ax
	shr eax, 16
	mov [gdt + 0x28 + 4], al
	mov [gdt + 0x28 + 7], ah
	mov ax, 0x28
	ltr ax

	; 1: single step over a NOP.
	mov dword [resume], step2
	mov al, 1
	out 0xe1, al
	pushfd
	or dword [esp], 0x100
	popfd
	nop
after_nop:
	jmp fail

step2:
	mov dword [resume], step3
	mov al, 2
	out 0xe1, al
	xor eax, eax
	pushfd
	or dword [esp], 0x100
	popfd
	cpuid
after_cpuid:
	jmp fail

step3:
	mov dword [resume], step4
	mov al, 3
	out 0xe1, al
	mov eax, cr4
	or eax, 1 << 13
mov_cr4:
	mov cr4, eax
	jmp fail

step4:
	mov dword [resume], step5
	mov al, 4
	out 0xe1, al
	mov eax, 0x2400			; GD, and bit 10, which reads as 1
	mov dr7, eax
mov_dr0:
	mov eax, dr0
	jmp fail

step5:
	mov dword [resume], step6
	mov al, 5
	out 0xe1, al
	db 0xf1				; ICEBP
after_icebp:
	jmp fail

step6:
	mov dword [resume], step7
	mov al, 6
	out 0xe1, al
	pushfd
	or dword [esp], 0x300		; TF, IF
	popfd
	hlt
after_hlt:
	jmp fail

step7:
	mov dword [resume], done
	mov al, 7
	out 0xe1, al
	mov eax, cr0
	or eax, 1 << 18			; AM
	mov cr0, eax
	push 0x23			; SS: ring-3 data
	push user_stack
	push 0x40002			; EFLAGS: AC
	push 0x1b			; CS: ring-3 code
	push user
	iretd
user:
	mov ax, 0x23
	mov ds, ax
misaligned:
	mov eax, [0x3001]
	jmp $

done:
	mov al, 0
	out 0xe2, al
	hlt
fail:
	mov al, 0xff
	out 0xe2, al
	hlt

; The handlers: push a dummy error code where the CPU pushes none, then
; the vector.
db_handler:
	push 0
	push 1
	jmp report
gp_handler:
	push 13
	jmp report
ac_handler:
	push 17
	jmp report
report:
	mov ax, 0x10
	mov ds, ax
	mov eax, [esp]			; vector
	out 0xe0, eax
	mov eax, [esp + 4]		; error code
	out 0xe0, eax
	mov eax, [esp + 8]		; EIP
	out 0xe0, eax
	mov eax, [esp + 16]		; EFLAGS
	out 0xe0, eax
	mov eax, dr6
	out 0xe0, eax
	mov eax, dr7
	out 0xe0, eax
	mov eax, 0xffff0ff0
	mov dr6, eax
	mov eax, 0x400
	mov dr7, eax
	mov esp, stack_top
	jmp [resume]

resume:	dd 0

align 8
gdt:	dq 0
	dq 0x00cf9a000000ffff		; 0x08: flat 32-bit code, ring 0
	dq 0x00cf92000000ffff		; 0x10: flat data, ring 0
	dq 0x00cffa000000ffff		; 0x18: flat 32-bit code, ring 3
	dq 0x00cff2000000ffff		; 0x20: flat data, ring 3
	dw 0x67, 0			; 0x28: 32-bit TSS (base filled in above)
	db 0, 0x89, 0, 0
gdtr:	dw 0x2f
	dd gdt

%macro gate 1
	dw %1 - $$ + 0x1000		; offset 15:0 (the code is below 64 KiB)
	dw 0x08
	dw 0x8e00			; 32-bit interrupt gate, present
	dw 0
%endmacro
align 8
idt:	times 1 dq 0
	gate db_handler			; 1
	times 11 dq 0
	gate gp_handler			; 13
	times 3 dq 0
	gate ac_handler			; 17
idtr:	dw 18 * 8 - 1
	dd idt

align 4
tss:	dd 0
	dd stack_top			; ESP0
	dd 0x10				; SS0
	times 23 dd 0
	dw 0, 0x68			; no I/O bitmap

align 16
	times 256 db 0
stack_top:
	times 64 db 0
user_stack:
