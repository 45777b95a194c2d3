/*
 * The labs' runtime (given, not to be changed): a Multiboot v1 header,
 * a stack, an IDT whose gates for #GP (13), #PF (14), IRQ 0 at vector 32
 * and IRQ 5 at vector 37 lead to the C functions gp_fault, page_fault,
 * timer_interrupt and device_interrupt, then kmain. Every other vector is absent: an exception there ends in a
 * triple fault (the checker runs with --no-reboot and says so).
 */
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00000003	/* page-aligned modules, memory info */

	.section .multiboot, "a"
	.p2align 2
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.text
	.globl _start
_start:
	cli
	movl $stack_top, %esp
	movw %cs, %bx			/* the loader's flat code selector */
	movl $gp_stub, %eax
	movl $13, %ecx
	call set_gate
	movl $pf_stub, %eax
	movl $14, %ecx
	call set_gate
	movl $timer_stub, %eax
	movl $32, %ecx
	call set_gate
	movl $device_stub, %eax
	movl $37, %ecx
	call set_gate
	lidt idt_descriptor
	call kmain
	movb $0, %al			/* kmain returned: status 0 */
	outb %al, $0xf4
1:	hlt
	jmp 1b

/* Gate ECX: a present 32-bit interrupt gate (DPL 0) to BX:EAX
 * (SDM Vol. 3A 6.11). */
set_gate:
	leal idt(,%ecx,8), %edx
	movw %ax, (%edx)
	movw %bx, 2(%edx)
	movw $0x8e00, 4(%edx)
	shrl $16, %eax
	movw %ax, 6(%edx)
	ret

/* #GP and #PF push an error code; the C handlers get (error code, EIP)
 * for #GP and (CR2, error code) for #PF. */
gp_stub:
	pushal
	pushl 36(%esp)			/* EIP, above the error code */
	pushl 36(%esp)			/* the error code */
	call gp_fault
	addl $8, %esp
	popal
	addl $4, %esp
	iret

pf_stub:
	pushal
	pushl 32(%esp)			/* the error code */
	movl %cr2, %eax
	pushl %eax
	call page_fault
	addl $8, %esp
	popal
	addl $4, %esp			/* drop the error code */
	iret				/* and run the instruction again */

timer_stub:
	pushal
	call timer_interrupt
	popal
	iret

device_stub:
	pushal
	call device_interrupt
	popal
	iret

	.data
	.p2align 3
idt:
	.fill 48, 8, 0
idt_end:
idt_descriptor:
	.word idt_end - idt - 1
	.long idt

	.bss
	.p2align 4
	.space 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
