/*
 * Lab 2, into protected mode: a boot sector that loads a GDT, sets
 * CR0.PE, far-jumps into 32-bit code, prints over COM1 with port I/O (no
 * BIOS in protected mode), and then breaks a segment limit on purpose.
 * An IDT with one interrupt gate, for #GP (vector 13), catches the fault:
 * its handler prints the error code and ends the run with status 13.
 */
	.code16
	.globl _start
_start:
	cli			/* no interrupts: there is no protected-mode IDT */
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $0x7c00, %sp

	lgdt gdt_descriptor	/* SDM Vol. 3A 9.9.1: a GDT before PE */
	lidt idt_descriptor
	movl %cr0, %eax
	orl $1, %eax		/* CR0.PE */
	movl %eax, %cr0
	ljmp $CODE, $protected	/* reload CS: now 32-bit code */

	.code32
protected:
	movw $DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movw %ax, %ss
	movl $0x7c00, %esp

	movl $message, %esi
	call puts

	/* ES: a data segment of 4 KiB (limit 0FFFh, byte granular). Offset
	 * 1000h is past its limit: #GP(0) (SDM Vol. 3A 5.3). */
	movw $SMALL, %ax
	movw %ax, %es
	movl $0x1000, %edi
	movb %es:(%edi), %al

	movb $1, %al		/* not reached */
	outb %al, $0xf4
	hlt

/* Vector 13: the CPU pushed an error code (0 for a limit violation), then
 * EFLAGS, CS and EIP (SDM Vol. 3A 6.12). */
gp_handler:
	movw $DATA, %ax
	movw %ax, %ds
	movl $caught, %esi
	call puts
	popl %eax		/* the error code */
	addb $'0', %al		/* one digit is enough here */
	movb %al, digit
	movl $digit, %esi
	call puts
	movb $13, %al
	outb %al, $0xf4		/* the run ends with status 13 */
	hlt

/* Print the zero-terminated string at DS:ESI on COM1. */
puts:
	lodsb
	testb %al, %al
	jz 2f
	movb %al, %bl
	movw $0x3fd, %dx	/* line status: wait for the transmitter */
1:	inb %dx, %al
	testb $0x20, %al
	jz 1b
	movb %bl, %al
	movw $0x3f8, %dx
	outb %al, %dx
	jmp puts
2:	ret

message:
	.asciz "protected mode!\r\n"
caught:
	.asciz "#GP, error code "
digit:
	.asciz "?\r\n"

	.equ CODE, 0x08
	.equ DATA, 0x10
	.equ SMALL, 0x18
	.p2align 3
gdt:
	.quad 0				/* the null descriptor */
	.quad 0x00cf9a000000ffff	/* 08h: code, base 0, 4 GiB, 32-bit */
	.quad 0x00cf92000000ffff	/* 10h: data, base 0, 4 GiB */
	.quad 0x0040920100000fff	/* 18h: data, base 10000h, limit FFFh, bytes */
gdt_end:
gdt_descriptor:
	.word gdt_end - gdt - 1
	.long gdt

/* The IDT: 14 gates, only vector 13's present (an interrupt gate, DPL 0,
 * to CODE:gp_handler; the handler is below 64 KiB, so the offset's high
 * half is 0). */
idt:
	.fill 13, 8, 0
	.word gp_handler, CODE, 0x8e00, 0
idt_end:
idt_descriptor:
	.word idt_end - idt - 1
	.long idt

	.org 510
	.word 0xaa55
