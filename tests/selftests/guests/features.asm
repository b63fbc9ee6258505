; features.asm - the guest of cpu_rules' walk over KVM_GET_SUPPORTED_CPUID:
; 32-bit protected mode (flat CS 0x08, data 0x10, set by the test), paging
; off, CR0.WP set (CR4.CET needs it), loaded at 0x1000. It runs the probes
; the test wrote at 0x2000, 16 bytes each: kind, a, b, c (kind 0 ends the
; list). For probe i it stores at 0x3000 + 4i the vector of the fault the
; probe took (0: none; #UD and #GP are caught and end the probe), and at
; 0x3400 + 8i the value it read (EDX:EAX). Kinds:
;  1 MOV to CR4 of CR4 | a, read CR4 back (the value), put the old CR4 back
;  2 RDMSR a
;  3 WRMSR a = c:b
;  4 XSETBV of XCR0 = c:b with CR4.OSXSAVE set, XGETBV back
;  5 RDTSCP (the value: TSC_AUX in ECX)
;  6 RDPID (the value: TSC_AUX)
;  7 RDTSC
; then HLT.
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
	or eax, 1 << 16			; WP
	mov cr0, eax
	mov esi, 0x2000
	xor ebp, ebp
next:
	mov eax, [esi]
	test eax, eax
	jz done
	mov dword [0x3000 + ebp * 4], 0
	mov dword [0x3400 + ebp * 8], 0
	mov dword [0x3404 + ebp * 8], 0
	cmp eax, 1
	je p_cr4
	cmp eax, 2
	je p_rdmsr
	cmp eax, 3
	je p_wrmsr
	cmp eax, 4
	je p_xsetbv
	cmp eax, 5
	je p_rdtscp
	cmp eax, 6
	je p_rdpid
	cmp eax, 7
	je p_rdtsc
	jmp after
p_cr4:
	mov ebx, cr4
	mov eax, ebx
	or eax, [esi + 4]
	mov cr4, eax
	mov eax, cr4
	mov [0x3400 + ebp * 8], eax
	mov cr4, ebx
	jmp after
p_rdmsr:
	mov ecx, [esi + 4]
	rdmsr
	jmp store
p_wrmsr:
	mov ecx, [esi + 4]
	mov eax, [esi + 8]
	mov edx, [esi + 12]
	wrmsr
	jmp after
p_xsetbv:
	mov ebx, cr4
	or ebx, 1 << 18			; OSXSAVE
	mov cr4, ebx
	xor ecx, ecx
	mov eax, [esi + 8]
	mov edx, [esi + 12]
	xsetbv
	xor ecx, ecx
	xgetbv
	jmp store
p_rdtscp:
	rdtscp
	mov eax, ecx
	xor edx, edx
	jmp store
p_rdpid:
	rdpid eax
	xor edx, edx
	jmp store
p_rdtsc:
	rdtsc
store:
	mov [0x3400 + ebp * 8], eax
	mov [0x3404 + ebp * 8], edx
after:
	add esi, 16
	inc ebp
	jmp next
done:
	hlt

ud_handler:
	mov dword [0x3000 + ebp * 4], 6
	mov dword [esp], after		; resume at the next probe
	iretd
gp_handler:
	add esp, 4			; the error code
	mov dword [0x3000 + ebp * 4], 13
	mov dword [esp], after
	iretd

%include "flat32.inc"
align 8
idt:	times 6 dq 0
	dw ud_handler			; vector 6 (#UD)
	dw 0x08
	dw 0x8e00
	dw 0
	times 6 dq 0
	dw gp_handler			; vector 13 (#GP)
	dw 0x08
	dw 0x8e00
	dw 0
idtr:	dw 14 * 8 - 1
	dd idt
