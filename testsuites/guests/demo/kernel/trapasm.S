/*
 * trapasm.S: the way into the kernel and between processes.
 *
 * An interrupt, an exception or `int $0x80` makes the CPU look up the
 * vector's gate in the IDT. From ring 3 it first switches to the stack
 * named by TSS.SS0:ESP0 and pushes the user's SS and ESP; from ring 0 it
 * stays on the current stack. Either way it then pushes EFLAGS, CS, EIP
 * and, for some exceptions, an error code (SDM Vol. 3A 6.12.1, figure
 * 6-4). The stubs below make every frame look alike: each vector gets a
 * stub that pushes a 0 where the CPU pushed no error code, then its
 * vector number, and jumps to alltraps, which saves the rest and calls
 * trap() with a struct trapframe (kernel.h).
 */
#include "kernel.h"

	.altmacro
/* Exceptions 8, 10-14 and 17 push an error code (SDM Vol. 3A 6.13,
 * table 6-1); `int n` never does, even for those numbers. */
.macro VECTOR n
vector_\n:
	.if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17)
	.else
	pushl $0
	.endif
	pushl $\n
	jmp alltraps
.endm
.macro VECTOR_ADDRESS n
	.long vector_\n
.endm

	.text
	.set i, 0
	.rept 256
	VECTOR %i
	.set i, i + 1
	.endr

alltraps:
	pushl %ds
	pushl %es
	pushl %fs
	pushl %gs
	pushal
	/* The CPU loaded CS and SS from the gate and the TSS, but DS and ES
	 * still hold whatever the interrupted code had: the user's
	 * selectors, which would work (they are flat) but are not ours. */
	movw $SEL_KDATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl %esp              /* the struct trapframe * */
	call trap
	addl $4, %esp

/* Returns through a trap frame. A new process starts here too: its
 * kernel stack is built (proc.c) to look like one that took a trap. */
	.globl trapret
trapret:
	popal
	popl %gs
	popl %fs
	popl %es
	popl %ds
	addl $8, %esp           /* the vector and error code */
	/* Pops EIP, CS, EFLAGS; if CS has RPL 3, also ESP and SS, which
	 * takes us back to ring 3 (SDM Vol. 2A IRET). */
	iret

	.section .rodata
	.globl trap_vectors
trap_vectors:
	.set i, 0
	.rept 256
	VECTOR_ADDRESS %i
	.set i, i + 1
	.endr

/*
 * void swtch(struct context **save, struct context *load)
 *
 * Saves the callee-saved registers on the current stack, stores the
 * stack pointer in *save, then switches to the stack `load` and pops
 * the same registers from it. The `ret` returns into whatever function
 * called swtch() on that stack, long ago: the other thread carries on.
 * This is the whole of a context switch; the address space (CR3) and
 * TSS.ESP0 are switched by the scheduler before it calls us.
 */
	.text
	.globl swtch
swtch:
	movl 4(%esp), %eax
	movl 8(%esp), %edx
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, (%eax)
	movl %edx, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

/*
 * A kernel thread's first instruction: the scheduler calls swtch() with
 * interrupts off, and a kernel thread runs with them on. proc.c leaves
 * the thread's function in EBX of its first context.
 */
	.globl kthread_start
kthread_start:
	sti
	call *%ebx
	pushl $0
	call proc_exit

	.section .note.GNU-stack, "", @progbits
