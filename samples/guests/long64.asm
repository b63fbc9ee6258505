; long64.asm - a 64-bit guest with its own kernel and user mode.
;
; The guest's rings are real: its kernel part runs in ring 0 and its user
; part in ring 3, in VMX non-root operation, unaware that rvmx (in VMX root)
; is underneath. The kernel sets up its GDT (with user segments and a TSS)
; and an IDT whose vector 0x80 user code may call, drops to ring 3 with
; IRETQ, and serves two "system calls": write (RAX=1, RSI=string) and exit
; (RAX=60, RDI=status). None of this causes a VM exit: only the kernel's
; port I/O does.
;
; rvmx-run --mode long starts it at 0x1000 in ring 0 with paging on (the
; first GiB identity-mapped, user-accessible) and flat segments.
bits 64
org 0x1000

kernel_start:
	lgdt [gdt_ptr]
	mov rax, tss		; put the TSS's address in its descriptor
	mov [gdt_tss + 2], ax
	shr rax, 16
	mov [gdt_tss + 4], al
	mov [gdt_tss + 7], ah
	shr rax, 16
	mov [gdt_tss + 8], eax
	mov ax, 0x28
	ltr ax
	push 0x08		; reload CS from our GDT (far return)
	lea rax, [rel .cs_ok]
	push rax
	retfq
.cs_ok:
	mov ax, 0x10
	mov ds, ax
	mov es, ax
	mov ss, ax

	mov rax, syscall_entry	; IDT[0x80]: interrupt gate, DPL 3
	mov rdi, idt + 0x80 * 16
	mov [rdi], ax
	mov word [rdi + 2], 0x08
	mov byte [rdi + 5], 0xee
	shr rax, 16
	mov [rdi + 6], ax
	shr rax, 16
	mov [rdi + 8], eax
	lidt [idt_ptr]

	mov rsi, m_kernel
	call puts
	mov qword [tss + 4], kstack_top	; RSP0: the stack for ring 3 -> 0
	push 0x18 | 3		; SS (user data, RPL 3)
	push ustack_top		; RSP
	push 0x2		; RFLAGS
	push 0x20 | 3		; CS (user code, RPL 3)
	push user_start		; RIP
	iretq			; to ring 3

; ---- ring 3 -----------------------------------------------------------------
user_start:
	mov eax, 1		; write(m_user)
	lea rsi, [rel m_user]
	int 0x80
	mov eax, 60		; exit(0)
	xor edi, edi
	int 0x80
	jmp $

; ---- ring 0: the system-call handler ------------------------------------------
syscall_entry:
	test qword [rsp + 8], 3	; the CS we came from: ring 3?
	jz .bad
	cmp eax, 1
	je .write
	cmp eax, 60
	je .exit
.bad:
	iretq
.write:
	push rsi
	mov rsi, m_syscall
	call puts
	pop rsi
	call puts
	iretq
.exit:
	mov rsi, m_exit
	call puts
	mov eax, edi
	out 0xf4, al		; VM exit: the launcher ends the run

; puts: print the NUL-terminated string at RSI on COM1 (ring 0 only).
puts:
	mov dx, 0x3f8
.next:
	lodsb
	test al, al
	jz .done
	out dx, al		; VM exit -> KVM_EXIT_IO
	jmp .next
.done:
	ret

m_kernel:	db "guest kernel: ring 0, long mode; dropping to ring 3", 10, 0
m_user:		db "hello from guest user mode (ring 3)", 10, 0
m_syscall:	db "guest kernel: system call from ring 3: ", 0
m_exit:		db "guest kernel: user exited; bye", 10, 0

align 8
gdt:
	dq 0
	dq 0x00209a0000000000	; 0x08 kernel code (64-bit)
	dq 0x0000920000000000	; 0x10 kernel data
	dq 0x0000f20000000000	; 0x18 user data (DPL 3)
	dq 0x0020fa0000000000	; 0x20 user code (64-bit, DPL 3)
gdt_tss:
	dq 0x0000890000000067	; 0x28 TSS (base filled in at run time)
	dq 0
gdt_end:
gdt_ptr:
	dw gdt_end - gdt - 1
	dq gdt

align 16
tss:	times 104 db 0

align 16
idt:	times 256 * 16 db 0
idt_ptr:
	dw 256 * 16 - 1
	dq idt

align 16
	times 1024 db 0
kstack_top:
	times 1024 db 0
ustack_top:
