; smp64.asm - an SMP guest: every vCPU counts.
;
; rvmx-run --mode long --vcpus N starts N vCPUs here at once, each in its
; own host thread, in 64-bit mode with paging on (the first GiB identity-
; mapped). A vCPU knows who it is from its registers (EDI = its number,
; ESI = N) and from CPUID (leaf 1, EBX[31:24]: its APIC ID).
;
; Each vCPU adds 1 to one shared counter 100,000 times with LOCK XADD, an
; atomic read-modify-write that works across vCPUs exactly as across CPUs:
; the vCPUs really run at the same time on the host's CPUs, and their
; threads move between them. Then it says it is done and halts. vCPU 0
; waits until all are done, prints the total (exactly N x 100,000) on the
; serial port and ends the guest through the exit port.
;
; The guest takes no interrupts (rvmx-run injects none), but it runs with
; RFLAGS.IF set: vCPU 0 spins while it waits, and Bochs 2.7, unlike real
; hardware, gives the host its timer interrupts (as VM exits) only while a
; guest has IF set. Without them the host could not preempt the spinning
; vCPU to run the others on that CPU.
bits 64
org 0x1000

ROUNDS equ 100000

start:
	sti				; see below
	mov eax, 1
	cpuid
	shr ebx, 24			; EBX = APIC ID, which rvmx-run sets to EDI
	cmp ebx, edi
	jne .bad_id
	mov ecx, ROUNDS
.count:
	mov eax, 1
	lock xadd [counter], eax
	dec ecx
	jnz .count
	lock inc dword [done]
	test edi, edi
	jz .report
	hlt				; the other vCPUs are finished

.bad_id:
	mov dword [bad], 1
	lock inc dword [done]
	test edi, edi
	jz .report
	hlt

.report:				; vCPU 0: wait for everyone
	pause
	cmp [done], esi
	jne .report
	lea rsi, [rel msg]
	call puts
	mov eax, [counter]
	call put_decimal
	lea rsi, [rel msg2]
	cmp dword [bad], 0
	je .print_ok
	lea rsi, [rel msg_bad]
.print_ok:
	call puts
	xor eax, eax
	out 0xf4, al			; exit status 0

; puts: prints the NUL-terminated string at RSI on the serial port.
puts:
	mov dx, 0x3f8
.next:
	lodsb
	test al, al
	jz .done
	out dx, al
	jmp .next
.done:
	ret

; put_decimal: prints EAX in decimal.
put_decimal:
	mov ecx, 10
	xor r8d, r8d			; digits pushed
.divide:
	xor edx, edx
	div ecx
	add dl, '0'
	push rdx
	inc r8d
	test eax, eax
	jnz .divide
	mov dx, 0x3f8
.print:
	pop rax
	out dx, al
	dec r8d
	jnz .print
	ret

msg:	db "smp64: all vCPUs done; counter = ", 0
msg2:	db 10, "smp64: each vCPU knew its number from CPUID", 10, 0
msg_bad: db 10, "smp64: a vCPU's APIC ID was not its number", 10, 0
align 4
counter: dd 0
done:	dd 0
bad:	dd 0
