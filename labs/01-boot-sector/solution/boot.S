/*
 * Lab 1, a boot sector: the BIOS loads these 512 bytes at 0000:7C00 and
 * jumps here in real mode. Print a line with the BIOS's teletype service
 * (INT 10h, AH = 0Eh: ringside's BIOS writes it to the screen and COM1),
 * then end the run through ringside's debug-exit port.
 */
	.code16
	.globl _start
_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $0x7c00, %sp	/* the stack grows down from below us */
	sti

	movw $message, %si
next:
	lodsb			/* AL = DS:[SI], SI += 1 */
	testb %al, %al
	jz done
	movb $0x0e, %ah		/* teletype output of AL */
	xorb %bh, %bh		/* page 0 */
	int $0x10
	jmp next

done:
	movb $0, %al
	outb %al, $0xf4		/* ringside's debug-exit port: status 0 */
	cli
	hlt

message:
	.asciz "Hello from my boot sector!\r\n"

	.org 510
	.word 0xaa55		/* the boot signature the BIOS checks */
