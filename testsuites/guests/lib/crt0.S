/*
 * crt0.S: the Multiboot v1 header and the first instructions of every
 * guest.
 *
 * A Multiboot loader (QEMU's -kernel, or ringside) enters here in 32-bit
 * protected mode with paging and interrupts off, EAX = 0x2BADB002 and
 * EBX = the physical address of the Multiboot information. The loader's
 * GDT may live in memory we are about to overwrite, so the first thing
 * we do is load our own and reload every segment register from it.
 */
#include "guest.h"

#define MB_MAGIC 0x1BADB002
/* Bit 0: page-align modules; bit 1: provide memory information. No bit
 * 16: the loader reads our ELF program headers, not an a.out kludge. */
#define MB_FLAGS 0x00000003

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.text
	.globl _start
_start:
	cli
	cld
	movl %eax, %esi                 /* Multiboot magic */
	lgdt gdt_pseudo_descriptor
	ljmp $SEL_KCODE, $1f
1:	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movw %ax, %ss
	movl $boot_stack_top, %esp

	/* Clear .bss. Loaders zero it (ELF p_memsz > p_filesz), but a guest
	 * that depends on that silently would be testing the loader. */
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb

	pushl %ebx
	pushl %esi
	call runtime_start
2:	cli
	hlt
	jmp 2b

	.data
	.align 4
	.word 0
gdt_pseudo_descriptor:
	.word GDT_ENTRIES * 8 - 1
	.long gdt

	.bss
	.align 16
	.globl boot_stack_top
boot_stack:
	.space STACK_SIZE
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
