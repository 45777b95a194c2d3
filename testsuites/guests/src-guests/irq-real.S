/*
 * irq-real: hardware interrupts in real mode, the way a DOS program
 * took them. The BIOS boots this sector and never leaves real mode; the
 * sector hooks IRQ 0 in the interrupt vector table, runs the 8254 at
 * 1 kHz, counts TICKS interrupts with `sti; hlt`, and gives the timer
 * back to the BIOS.
 *
 * The BIOS programmed the 8259A pair (IRQ 0 at vector 08h) and runs
 * channel 0 at 18.2 Hz, counting ticks in the BIOS data area. A program
 * that speeds the timer up must not speed up the time of day, so the
 * handler does what DOS programs did: it adds the new divisor to a
 * 16-bit sum of 8254 input clocks, and whenever the sum passes 65536 (a
 * BIOS tick's worth) it chains to the BIOS's INT 08h, which counts the
 * tick and sends the EOI; otherwise it sends the EOI itself. TICKS is 60
 * so that exactly one tick (the 55th) is chained: the BIOS's count must
 * then have moved by exactly one.
 *
 * Output goes to COM1 twice over: by port I/O, polling the line status
 * register as every ringside guest does, and through INT 10h AH=0Eh,
 * the BIOS teletype (ringside's copies it to COM1; SeaBIOS only draws
 * it on the screen). The status goes to the debug-exit port 0xF4.
 *
 * Everything printed is fixed text: the checks decide between the
 * success and the failure lines, so two engines must print the same.
 */

#define COM1 0x3F8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20           /* transmit holding register empty */
#define DEBUG_EXIT_PORT 0xF4
#define POST_PORT 0x80

#define PIC_MASTER 0x20
#define OCW2_EOI 0x20
#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_CH0_RATE_GENERATOR 0x34 /* LSB then MSB, mode 2, binary */
#define PIT_CH0_SQUARE_WAVE 0x36    /* what the BIOS programmed: mode 3 */
#define PIT_DIVISOR 1193            /* 1193182 Hz / 1193 = 1000.15 Hz */
#define TICKS 60

#define IVT_INT08 (0x08 * 4)
#define BDA_TICKS 0x46C         /* BIOS ticks since midnight, 32 bits */

	.code16
	.text
	.globl _start
_start:
	/* The BIOS may enter at 07C0:0000 or 0000:7C00; a far jump makes
	 * CS 0, so that CS: addresses our variables in the handler. */
	ljmp $0, $start
start:
	xorw %ax, %ax
	movw %ax, %ss           /* MOV SS holds interrupts off for the */
	movw $0x7C00, %sp       /* next instruction (SDM Vol. 3A 6.8.3) */
	movw %ax, %ds
	movw %ax, %es
	cld
	movw $msg_start, %si
	call com1_puts
	movb $0x01, %al
	outb %al, $POST_PORT

	/* Hook IRQ 0 with interrupts off: the BIOS's handler must not run
	 * between reading its tick count and replacing its vector. Only
	 * IRQ 0 stays unmasked while we own the timer. */
	cli
	inb $PIC_MASTER + 1, %al
	movb %al, saved_imr
	movb $0xFE, %al
	outb %al, $PIC_MASTER + 1
	movl IVT_INT08, %eax
	movl %eax, bios_int08
	movw $timer_interrupt, IVT_INT08
	movw %cs, IVT_INT08 + 2
	movl BDA_TICKS, %eax
	movl %eax, bios_ticks_before

	movb $PIT_CH0_RATE_GENERATOR, %al
	outb %al, $PIT_COMMAND
	movw $PIT_DIVISOR, %ax
	outb %al, $PIT_CHANNEL0
	movb %ah, %al
	outb %al, $PIT_CHANNEL0
	movb $0x02, %al
	outb %al, $POST_PORT

	/* STI delays interrupts until after HLT (SDM Vol. 2B STI), so a
	 * tick cannot fall between the check and the halt. */
wait_ticks:
	cli
	cmpw $TICKS, ticks
	jae give_back
	sti
	hlt
	jmp wait_ticks

	/* Back to the BIOS's timer: mode 3 with a count of 0 (65536), its
	 * vector and its masks. Interrupts are still off. */
give_back:
	movb $PIT_CH0_SQUARE_WAVE, %al
	outb %al, $PIT_COMMAND
	xorb %al, %al
	outb %al, $PIT_CHANNEL0
	outb %al, $PIT_CHANNEL0
	movl bios_int08, %eax
	movl %eax, IVT_INT08
	movb saved_imr, %al
	outb %al, $PIC_MASTER + 1
	movb $0x03, %al
	outb %al, $POST_PORT

	cmpw $1, chains
	jne fail
	movl BDA_TICKS, %eax
	subl bios_ticks_before, %eax
	cmpl $1, %eax
	jne fail

	/* The BIOS owns IRQ 0 again: wait for its next tick. */
	movl BDA_TICKS, %ebx
1:	sti
	hlt
	cli
	cmpl BDA_TICKS, %ebx
	je 1b

	movw $msg_done, %si
	call com1_puts
	movw $msg_int10, %si
	call bios_puts
	movb $0x04, %al
	outb %al, $POST_PORT
	xorb %al, %al
	jmp exit

fail:
	movw $msg_fail, %si
	call com1_puts
	movb $1, %al
exit:
	outb %al, $DEBUG_EXIT_PORT
2:	cli
	hlt
	jmp 2b

/* IRQ 0 while we own it. CS is 0 (the vector says so), DS is whatever
 * was interrupted. */
timer_interrupt:
	pushw %ax
	pushw %ds
	xorw %ax, %ax
	movw %ax, %ds
	incw ticks
	addw $PIT_DIVISOR, pit_clocks
	jc chain_to_bios
	movb $OCW2_EOI, %al
	outb %al, $PIC_MASTER
	popw %ds
	popw %ax
	iret
	/* A BIOS tick's worth of 8254 clocks: the BIOS's handler counts it,
	 * sends the EOI and IRETs through our interrupt frame. */
chain_to_bios:
	incw chains
	popw %ds
	popw %ax
	ljmp *%cs:bios_int08

/* Writes the string at DS:SI to COM1. Clobbers AX, DX, SI. */
com1_puts:
	lodsb
	testb %al, %al
	jz 2f
	movb %al, %ah
	movw $COM1_LSR, %dx
1:	inb %dx, %al
	testb $LSR_THRE, %al
	jz 1b
	movw $COM1, %dx
	movb %ah, %al
	outb %al, %dx
	jmp com1_puts
2:	ret

/* Writes the string at DS:SI through the BIOS teletype, page 0.
 * Clobbers AX, BX, SI. */
bios_puts:
	lodsb
	testb %al, %al
	jz 1f
	movb $0x0E, %ah
	xorw %bx, %bx
	pushw %si
	int $0x10
	popw %si
	jmp bios_puts
1:	ret

ticks:
	.word 0
chains:
	.word 0
pit_clocks:
	.word 0
saved_imr:
	.byte 0
	.balign 4
bios_int08:
	.long 0
bios_ticks_before:
	.long 0

msg_start:
	.asciz "irq-real: start\r\n"
msg_done:
	.asciz "irq-real: 60 ticks at 1 kHz on our INT 08h, the 55th chained (BIOS count +1)\r\n"
msg_int10:
	.asciz "irq-real: this line came through INT 10h AH=0Eh\r\n"
msg_fail:
	.asciz "irq-real: FAIL\r\n"

	.org 510
	.word 0xAA55
