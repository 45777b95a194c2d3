/*
 * entry.S: the Multiboot header and the kernel's first instructions.
 *
 * Two loaders start us, and both leave the machine as the Multiboot
 * specification (0.6.96, 3.2) says: 32-bit protected mode, flat code
 * and data segments, paging and interrupts off, A20 on, EAX = 0x2BADB002
 * and EBX = the physical address of a Multiboot information structure.
 * One is a Multiboot loader (QEMU's -kernel, ringside's builtin:demo),
 * which reads the header below; the other is our own boot sector
 * (boot/bootsect.S), which copies the image to 1 MiB and jumps here.
 *
 * The GDT the loader used may lie in memory we are about to reuse. That
 * is harmless as long as we load no segment register until desc_init
 * has loaded ours: the CPU uses the descriptor caches, not the table
 * (SDM Vol. 3A 3.4.3).
 */
#include "kernel.h"

#define MB_HEADER_MAGIC 0x1BADB002
/* Bit 0: align modules on pages; bit 1: pass the memory sizes. No bit
 * 16: the loader reads our ELF program headers. */
#define MB_HEADER_FLAGS 0x00000003

	.section .multiboot, "a"
	.align 4
	.long MB_HEADER_MAGIC
	.long MB_HEADER_FLAGS
	.long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

	.text
	.globl _start
_start:
	cli
	cld
	movl %eax, %esi         /* the boot magic, for kmain to check */

	/* Clear .bss. A Multiboot loader zeroes it, but the boot sector
	 * copies only the bytes of the file. The Multiboot information is
	 * outside .bss on both paths (below 1 MiB, or after the image). */
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb

	movl $boot_stack_top, %esp
	pushl %ebx
	pushl %esi
	call kmain              /* never returns */
1:	cli
	hlt
	jmp 1b

	/* kmain and then the scheduler loop run on this stack. */
	.bss
	.align 16
	.space 8192
	.globl boot_stack_top
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
