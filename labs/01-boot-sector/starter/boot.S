/*
 * Lab 1, a boot sector: the BIOS loads these 512 bytes at 0000:7C00 and
 * jumps here in real mode. Print the message below with the BIOS's
 * teletype service, then end the run through ringside's debug-exit port.
 *
 * Check your work with:  ringside lab check 1 DIR
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
	/*
	 * TODO: print the zero-terminated string at DS:SI, one character at
	 * a time. The BIOS's teletype service is INT 10h with AH = 0Eh,
	 * AL = the character and BH = 0 (the display page). LODSB loads the
	 * byte at DS:SI into AL and advances SI.
	 */

done:
	movb $0, %al
	outb %al, $0xf4		/* ringside's debug-exit port: status 0 */
	cli
	hlt

message:
	.asciz "Hello from my boot sector!\r\n"

	.org 510
	.word 0xaa55		/* the boot signature the BIOS checks */
