; hello16.asm - the smallest guest: 16-bit real mode, as a PC starts.
;
; rvmx-run loads this flat binary at 0x1000 and starts the vCPU there with
; CS=0 (rvmx-run --mode real). Every OUT below is a VM exit: the CPU leaves
; the guest (VMX non-root) for rvmx (VMX root), which hands the exit to the
; launcher as KVM_EXIT_IO; the launcher's UART (vm-superio) prints the byte.
; Writing a byte to port 0xf4 ends the run with that exit status.
bits 16
org 0x1000

start:
	mov si, msg
.next:
	lodsb			; AL = [DS:SI++]
	test al, al
	jz .done
	mov dx, 0x3f8		; COM1 data register
	out dx, al		; VM exit (I/O instruction) -> KVM_EXIT_IO
	jmp .next
.done:
	mov al, 0
	out 0xf4, al		; VM exit -> the launcher ends the run: status 0

msg:	db "Hello from a real-mode guest on rvmx!", 10, 0
