; prot32.asm - a 32-bit protected-mode guest, and the devices of rvmx-run's
; little machine: CPUID, the MMIO test device, and a hypercall.
;
; rvmx-run --mode prot32 starts it at 0x1000 with flat 4 GiB segments
; (CS=0x08, DS=0x10), paging off: guest-virtual = guest-physical here.
;   CPUID   always exits in VMX non-root operation; rvmx answers it in the
;           kernel (the launcher never sees it) and hides VMX from the guest.
;   MMIO    0xd0000000 is outside guest RAM: EPT maps nothing there, so the
;           access is an EPT violation; rvmx decodes the MOV and hands it to
;           the launcher as KVM_EXIT_MMIO.
;   VMCALL  exits to rvmx, which hands it to the launcher as
;           KVM_EXIT_HYPERCALL (nr in EAX, first argument in EBX).
bits 32
org 0x1000

start:
	mov esi, m_hello
	call puts

	xor eax, eax		; CPUID leaf 0: the vendor string
	cpuid			; VM exit, handled inside rvmx
	mov [vendor], ebx
	mov [vendor + 4], edx
	mov [vendor + 8], ecx
	mov esi, m_vendor
	call puts
	mov esi, vendor
	call puts
	mov esi, m_nl
	call puts

	mov eax, 1		; CPUID leaf 1, ECX bit 5: VMX
	cpuid
	mov esi, m_novmx
	test ecx, 1 << 5
	jz .vmx_hidden
	mov esi, m_vmx
.vmx_hidden:
	call puts

	mov eax, [0xd0000000]	; MMIO read -> KVM_EXIT_MMIO (read, 4 bytes)
	mov esi, m_mmio_bad
	cmp eax, 'RVMX'
	jne .id_done
	mov esi, m_mmio_id
.id_done:
	call puts
	mov dword [0xd0000010], 0x12345678	; MMIO write -> KVM_EXIT_MMIO
	mov eax, [0xd0000010]			; and read it back
	mov esi, m_mmio_bad
	cmp eax, 0x12345678
	jne .rw_done
	mov esi, m_mmio_rw
.rw_done:
	call puts

	mov eax, 1		; hypercall 1: "print RBX"
	mov ebx, 0xcafe
	vmcall			; VM exit -> KVM_EXIT_HYPERCALL (on rvmx)

	mov esi, m_bye
	call puts
	mov al, 0
	out 0xf4, al

; puts: print the NUL-terminated string at ESI on COM1.
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

m_hello:	db "32-bit protected mode guest", 10, 0
m_vendor:	db "CPUID vendor: ", 0
m_nl:		db 10, 0
m_novmx:	db "CPUID.1:ECX.VMX = 0 (no nested VMX)", 10, 0
m_vmx:		db "CPUID.1:ECX.VMX = 1 (!)", 10, 0
m_mmio_id:	db "MMIO device says RVMX", 10, 0
m_mmio_rw:	db "MMIO register reads back what was written", 10, 0
m_mmio_bad:	db "MMIO device misbehaves", 10, 0
m_bye:		db "bye", 10, 0
vendor:		times 13 db 0
