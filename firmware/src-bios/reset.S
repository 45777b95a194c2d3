/* From the reset vector to the boot sector.
 *
 * The CPU starts in real mode at F000:FFF0 (linear 0xFFFFFFF0, SDM Vol. 3A
 * 9.1.4). We jump into the 16-bit code, switch to flat 32-bit protected
 * mode to run POST (post.c), switch back to real mode and ask INT 19h to
 * boot. Nothing here runs again after POST: the runtime services never
 * leave real mode.
 *
 * Two address spaces meet in this file. 16-bit code (.text16) is linked
 * at offsets within segment F000, so `$label` is what CS:IP needs; 32-bit
 * code (.text) is linked at its linear address in 0xF0000-0xFFFFF. See
 * bios.ld. */
#include "layout.h"

	.section .text16, "ax"
	.code16

	.globl post_entry
post_entry:
	cli
	cld
	mov	$0x01, %al		/* POST code 01: reset vector reached */
	out	%al, $0x80
	/* SDM Vol. 3A 9.9.1: load a GDT, set CR0.PE, far jump to flush the
	 * prefetched real-mode instructions and load CS. */
	lgdtl	%cs:gdt_descriptor
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	$SEL_CODE32, $post_entry32

/* Back from POST in 16-bit protected mode (CS base 0xF0000): load data
 * segments with real-mode-like limits (64 KiB) before clearing PE, since
 * real mode keeps whatever limit the descriptor caches hold (SDM Vol. 3A
 * 9.9.2). */
post_return16:
	mov	$SEL_DATA16, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %fs
	mov	%ax, %gs
	mov	%ax, %ss
	mov	%cr0, %eax
	and	$~1, %eax
	mov	%eax, %cr0
	ljmp	$BIOS_SEG, $post_real
post_real:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %fs
	mov	%ax, %gs
	mov	%ax, %ss
	mov	$0x7C00, %sp
	mov	$0x30, %al		/* POST code 30: real mode again, booting */
	out	%al, $0x80
	sti
	int	$0x19
	/* INT 19h does not return. */
1:	cli
	hlt
	jmp	1b

/* Flat 4 GiB code and data for POST, and 64 KiB 16-bit segments to leave
 * protected mode through. The accessed bits are preset so the CPU never
 * writes to this table: it is in ROM. */
	.balign 8
gdt:
	.quad	0
	.quad	0x00CF9B000000FFFF	/* 0x08: code, 32-bit, base 0, limit 4 GiB */
	.quad	0x00CF93000000FFFF	/* 0x10: data, 32-bit, base 0, limit 4 GiB */
	.quad	0x00009B0F0000FFFF	/* 0x18: code, 16-bit, base 0xF0000, limit 64 KiB */
	.quad	0x000093000000FFFF	/* 0x20: data, 16-bit, base 0, limit 64 KiB */
gdt_end:
gdt_descriptor:
	.word	gdt_end - gdt - 1
	.long	gdt + BIOS_BASE

	.section .text, "ax"
	.code32
post_entry32:
	mov	$SEL_DATA32, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %fs
	mov	%ax, %gs
	mov	%ax, %ss
	mov	$POST_STACK_TOP, %esp
	call	post_main
	ljmp	$SEL_CODE16, $post_return16

/* The reset vector: the last 16 bytes of the ROM. F000:FFF5 holds the
 * BIOS date and F000:FFFE the model byte (0xFC, an AT), where software
 * has always looked for them; the last byte is the checksum that build.rs
 * sets so that all 65536 bytes sum to 0 modulo 256. */
	.section .reset, "ax"
	.code16
	.globl reset_vector
reset_vector:
	ljmp	$BIOS_SEG, $post_entry	/* F000:FFF0 */
	.ascii	"06/01/25"		/* F000:FFF5 */
	.byte	0			/* F000:FFFD */
	.byte	0xFC			/* F000:FFFE */
	.byte	0			/* F000:FFFF: checksum, set by build.rs */
