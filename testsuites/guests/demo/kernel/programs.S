/*
 * programs.S: the user programs, built into the kernel image.
 *
 * build.rs compiles and links each program in user/ into an ELF file,
 * then assembles this file with -I pointing at them; .incbin copies each
 * file's bytes here verbatim. `programs` is the table the shell looks
 * names up in (struct program in kernel.h): name, image, size.
 */
	.macro PROGRAM name
	.pushsection .rodata.program_names, "a"
1:	.asciz "\name"
	.popsection
	.pushsection .rodata.program_images, "a"
	.align 4
2:	.incbin "\name\().elf"
3:
	.popsection
	.long 1b, 2b, 3b - 2b
	.endm

	.section .rodata
	.align 4
	.globl programs
programs:
	PROGRAM hello
	PROGRAM bench
	PROGRAM bench-small
	PROGRAM syscalls
	PROGRAM pagefaults
	PROGRAM ports
	PROGRAM sleeper
	PROGRAM fault
	PROGRAM cat
programs_end:

	.globl program_count
program_count:
	.long (programs_end - programs) / 12

	.section .note.GNU-stack, "", @progbits
