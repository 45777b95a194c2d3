/*
 * Lab 2, into protected mode: a boot sector that loads a GDT, sets
 * CR0.PE, far-jumps into 32-bit code, prints over COM1 with port I/O (no
 * BIOS in protected mode), and then breaks a segment limit on purpose.
 * An IDT with one interrupt gate, for #GP (vector 13), catches the fault:
 * its handler prints the error code and ends the run with status 13.
 *
 * Three steps are left to you (TODO 1-3). Check your work with:
 *     ringside lab check 2 DIR
 */
	.code16
	.globl _start
_start:
	cli			/* no interrupts: there is no protected-mode IDT */
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $0x7c00, %sp

	/*
	 * TODO 2: load the GDT (LGDT) and the IDT (LIDT) from their
	 * descriptors below, set CR0.PE (bit 0 of CR0), and far-jump to
	 * CODE:protected so that CS holds a protected-mode selector (SDM
	 * Vol. 3A 9.9.1). Then delete the three lines after this comment,
	 * which end the run with status 1 while the step is not done.
	 */
	movb $1, %al
	outb %al, $0xf4
	hlt

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
	/*
	 * TODO 1: three segment descriptors (SDM Vol. 3A 3.4.5, figure
	 * 3-8), each a .quad:
	 *   08h: code, base 0, limit FFFFFh in 4 KiB units (4 GiB), 32-bit,
	 *        present, DPL 0, execute/read;
	 *   10h: data, base 0, 4 GiB, read/write;
	 *   18h: data, base 10000h, limit FFFh in bytes (4 KiB), read/write.
	 */
	.quad 0
	.quad 0
	.quad 0
gdt_end:
gdt_descriptor:
	.word gdt_end - gdt - 1
	.long gdt

/* The IDT: 14 gates, only vector 13's present (an interrupt gate, DPL 0,
 * to CODE:gp_handler; the handler is below 64 KiB, so the offset's high
 * half is 0). */
idt:
	.fill 13, 8, 0
	/*
	 * TODO 3: the gate for vector 13: an interrupt gate (SDM Vol. 3A
	 * 6.11, figure 6-2) to CODE:gp_handler, present, DPL 0, 32-bit.
	 * As four .word: offset 15-0, selector, type and flags, offset 31-16.
	 */
	.quad 0
idt_end:
idt_descriptor:
	.word idt_end - idt - 1
	.long idt

	.org 510
	.word 0xaa55
