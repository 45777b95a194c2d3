/*
 * vm86.S: the way into virtual-8086 mode, and the 16-bit code that runs
 * there. The code between v86_blob_start and v86_blob_end is copied to
 * linear 0x20000 and runs with CS = 0x2000, so each entry point's IP is
 * its offset in the blob. Every entry ends in an INT, HLT or an
 * instruction expected to fault, which brings the CPU back to ring 0.
 */
#include "guest.h"
#include "vm86.h"

	.text
	.code32
/* void vm86_enter(const struct v86_frame *f): IRET pops EIP, CS, EFLAGS
 * and, because the popped EFLAGS has VM=1 at CPL 0, also ESP, SS, ES,
 * DS, FS and GS (SDM Vol. 3A 20.2.1). struct v86_frame is laid out in
 * that order, so pointing ESP at it is all the setup IRET needs. */
	.globl vm86_enter
vm86_enter:
	movl 4(%esp), %esp
	iret

	.data
	.code16
	.globl v86_blob_start, v86_blob_end
v86_blob_start:

/* Segment arithmetic: linear = segment * 16 + offset. DS:0x10 with
 * DS = 0x3000 and ES:0 with ES = 0x3001 are the same byte, 0x30010. */
	.globl v86_segments
v86_segments:
	movw $V86_DATA_SEG, %ax
	movw %ax, %ds
	movw $0x1234, 0x10
	movw $V86_DATA_SEG + 1, %ax
	movw %ax, %es
	movw %es:0, %bx
	movw %bx, %es:2
	/* A far call to the same code through another CS:IP pair. */
	lcall $V86_CODE_SEG + 1, $(v86_far_target - v86_blob_start - 0x10)
	movw $0x4000, %ax
	movw %ax, %fs
	movw $0x5000, %ax
	movw %ax, %gs
	.globl v86_segments_int
v86_segments_int:
	int $VEC_MONITOR
	hlt

v86_far_target:
	movw %cs, %dx
	lret

/* At IOPL 3: PUSHF shows IOPL = 3; POPF cannot change IOPL; PUSHFD
 * stores VM as 0 (SDM Vol. 2B PUSHF, POPF). */
	.globl v86_flags
v86_flags:
	pushf
	popw %bx
	movw %bx, %ax
	andw $0xCFFF, %ax
	pushw %ax
	popf
	pushf
	popw %cx
	pushfl
	popl %edx
	int $VEC_MONITOR

/* Each of these faults with #GP(0) at IOPL < 3; the monitor checks that
 * the saved IP is the instruction's own. */
	.globl v86_cli, v86_sti, v86_pushf, v86_popf, v86_int, v86_iret, v86_hlt
v86_cli:
	cli
	hlt
v86_sti:
	sti
	hlt
v86_pushf:
	pushf
	hlt
v86_popf:
	popf
	hlt
v86_int:
	int $VEC_MONITOR
	hlt
v86_iret:
	iret
	hlt
v86_hlt:
	hlt

/* Prints "v86 " on COM1 with IN and OUT to ports the I/O bitmap allows,
 * then reads a port it denies. */
	.globl v86_io, v86_io_denied
v86_io:
	movw $v86_message - v86_blob_start, %si
1:	movw $0x3FD, %dx
2:	inb %dx, %al
	testb $0x20, %al
	jz 2b
	movw $0x3F8, %dx
	movb %cs:(%si), %al
	outb %al, %dx
	incw %si
	cmpb $0, %cs:(%si)
	jnz 1b
	movw $PORT_DENIED, %dx
v86_io_denied:
	inb %dx, %al
	hlt
v86_message:
	.asciz "v86 "

/* Two CLIs for the monitor to emulate, then a store through DS to show
 * DS survived the trips through the monitor, then HLT to stop. */
	.globl v86_emulated
v86_emulated:
	movw $V86_DATA_SEG, %ax
	movw %ax, %ds
	cli
	cli
	movw $0x7777, 0x20
	movw $0x5A5A, %si
	hlt

	.globl v86_dpl0_gate
v86_dpl0_gate:
	int $VEC_DPL0
	hlt

v86_blob_end:
	.code32

	.section .note.GNU-stack, "", @progbits
