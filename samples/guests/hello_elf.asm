; hello_elf.asm - a guest in an ELF file, loaded where its program header
; says (physical address 1 MiB) and started at its entry point, in 32-bit
; protected mode: rvmx-run --mode prot32 hello_elf.elf
;
; The ELF header and program header are written by hand, so that nasm's
; flat-binary output is itself the ELF file (no linker needed).
bits 32
org 0x100000

ehdr:
	db 0x7f, "ELF", 1, 1, 1, 0	; 32-bit, little-endian, version 1
	times 8 db 0
	dw 2				; e_type: executable
	dw 3				; e_machine: i386
	dd 1				; e_version
	dd start			; e_entry
	dd phdr - $$			; e_phoff
	dd 0				; e_shoff
	dd 0				; e_flags
	dw ehdr_size			; e_ehsize
	dw phdr_size			; e_phentsize
	dw 1				; e_phnum
	dw 0, 0, 0			; e_shentsize, e_shnum, e_shstrndx
ehdr_size equ $ - ehdr

phdr:
	dd 1				; p_type: PT_LOAD
	dd 0				; p_offset
	dd $$				; p_vaddr
	dd $$				; p_paddr: where rvmx-run puts it
	dd file_size			; p_filesz
	dd file_size			; p_memsz
	dd 5				; p_flags: R X
	dd 0x1000			; p_align
phdr_size equ $ - phdr

start:
	mov esi, msg
	mov dx, 0x3f8
.next:
	lodsb
	test al, al
	jz .done
	out dx, al
	jmp .next
.done:
	mov al, 0
	out 0xf4, al

msg:	db "Hello from an ELF guest at 1 MiB!", 10, 0
file_size equ $ - $$
