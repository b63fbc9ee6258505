; exits.asm - the benchmarks' guest (real mode, at 0x1000): ECX rounds of
; one VM-exiting instruction, chosen by EBX, then HLT:
;   0 = CPUID (handled in the kernel)
;   1 = OUT to port 0x10 (handled in userspace)
;   2 = RDMSR of IA32_APIC_BASE (handled in the kernel)
;   3 = VMCALL (KVM: in the kernel; rvmx: KVM_EXIT_HYPERCALL to userspace)
;   4 = a byte store to 0xd0000, where no memory is (MMIO, in userspace)
;   5 = HLT (to userspace, which runs the vCPU again)
; and ends with OUT to port 0x11 and HLT.
bits 16
org 0x1000
	mov ebp, ecx
	cmp ebx, 5
	ja done
	shl bx, 1
	jmp [table + bx]
table:	dw cpuids, outs, rdmsrs, vmcalls, mmios, hlts
cpuids:
	xor eax, eax
	cpuid
	dec ebp
	jnz cpuids
	jmp done
outs:
	out 0x10, al
	dec ebp
	jnz outs
	jmp done
rdmsrs:
	mov ecx, 0x1b
	rdmsr
	dec ebp
	jnz rdmsrs
	jmp done
vmcalls:
	xor eax, eax
	vmcall
	dec ebp
	jnz vmcalls
	jmp done
mmios:
	mov ax, 0xd000
	mov es, ax
.next:
	mov [es:0], al
	dec ebp
	jnz .next
	jmp done
hlts:
	hlt
	dec ebp
	jnz hlts
	jmp done
done:
	out 0x11, al
	hlt
