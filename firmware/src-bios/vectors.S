/* The small interrupt handlers: the default ones every unused vector
 * points at, INT 11h and 12h, and the way from POST to the boot sector
 * (INT 19h) or to the "no boot disk" stop (INT 18h). */
#include "layout.h"

	.section .text16, "ax"
	.code16

/* A software interrupt nobody implements returns at once. */
	.globl int_default
int_default:
	iret

/* An unexpected IRQ on the master 8259 (vectors 08h-0Fh) or the slave
 * (70h-77h): acknowledge it so the line is not blocked forever. A slave
 * IRQ needs an EOI on both chips (it came through master IR2). */
	.globl irq_master_default
irq_master_default:
	push	%ax
	mov	$0x20, %al
	out	%al, $0x20
	pop	%ax
	iret

	.globl irq_slave_default
irq_slave_default:
	push	%ax
	mov	$0x20, %al
	out	%al, $0xA0
	out	%al, $0x20
	pop	%ax
	iret

/* Returns from an interrupt handler with the current CF, or ZF, as the
 * result: the handler jumps here with the stack as INT left it. */
	.globl iret_carry
iret_carry:
	push	%bp
	mov	%sp, %bp
	jc	1f
	andb	$~0x01, 6(%bp)
	pop	%bp
	iret
1:	orb	$0x01, 6(%bp)
	pop	%bp
	iret

	.globl iret_zero
iret_zero:
	push	%bp
	mov	%sp, %bp
	jz	1f
	andb	$~0x40, 6(%bp)
	pop	%bp
	iret
1:	orb	$0x40, 6(%bp)
	pop	%bp
	iret

/* INT 11h: AX = the equipment list. */
	.globl int11_equipment
int11_equipment:
	push	%ds
	mov	$BDA_SEG, %ax
	mov	%ax, %ds
	mov	BDA_EQUIPMENT, %ax
	pop	%ds
	iret

/* INT 12h: AX = KiB of conventional memory below the EBDA. */
	.globl int12_memory
int12_memory:
	push	%ds
	mov	$BDA_SEG, %ax
	mov	%ax, %ds
	mov	BDA_MEM_KIB, %ax
	pop	%ds
	iret

/* INT 19h: load sector 0 of the first hard disk at 0000:7C00 and jump to
 * it with DL = 0x80, if it ends with the boot signature 55h AAh. */
	.globl int19_boot
int19_boot:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x7C00, %sp
	sti
	cmpb	$0, 0x400 + BDA_DISK_COUNT
	je	no_boot_disk
	mov	$3, %si			/* attempts */
1:	mov	$0x0201, %ax		/* read 1 sector */
	mov	$0x0001, %cx		/* cylinder 0, sector 1 */
	mov	$0x0080, %dx		/* head 0, drive 80h */
	mov	$0x7C00, %bx
	int	$0x13
	jnc	2f
	xor	%ah, %ah		/* reset and try again */
	int	$0x13
	dec	%si
	jnz	1b
	jmp	no_boot_disk
2:	cmpw	$0xAA55, 0x7DFE
	jne	no_boot_disk
	mov	$0x0080, %dx
	ljmp	$0, $0x7C00
no_boot_disk:
	int	$0x18

/* INT 18h: no way to boot. Say so on the screen and COM1, then stop,
 * leaving POST code 0x18 (the vector's number) on port 0x80 so that the
 * emulator can tell this halt from a guest's. */
	.globl int18_no_boot
int18_no_boot:
	mov	$0x18, %al
	out	%al, $0x80
	mov	%cs, %ax
	mov	%ax, %ds
	mov	$no_boot_message, %si
	cld
1:	lodsb
	test	%al, %al
	jz	2f
	mov	$0x0E, %ah
	mov	$0x0007, %bx
	int	$0x10
	jmp	1b
2:	cli
	hlt
	jmp	2b

no_boot_message:
	.asciz	"No bootable disk\r\n"
