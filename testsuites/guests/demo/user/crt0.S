/*
 * crt0.S: where a user program starts. The kernel enters here in ring 3
 * with ESP = USER_STACK_TOP (the stack's pages appear on first use) and
 * every other register 0. main's return value becomes the exit status.
 */
	.section .text.entry, "ax"
	.globl _start
_start:
	call main
	pushl %eax
	call exit

	.section .note.GNU-stack, "", @progbits
