/*
 * trap.S: interrupt entry, the TRY unwinder, and the way into ring 3.
 *
 * Each of the 256 vectors gets a stub that makes the stack look the same
 * whatever the CPU pushed: vectors 8, 10-14 and 17 push an error code
 * (SDM Vol. 3A 6.13, table 6-1); for the others the stub pushes a zero
 * in its place. Then trap_common saves the rest and calls trap_dispatch
 * with a struct trapframe (guest.h).
 */
#include "guest.h"

	.altmacro
.macro VECTOR n
vector_\n:
	.if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17)
	.else
	pushl $0
	.endif
	pushl $\n
	jmp trap_common
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

trap_common:
	pushl %ds
	pushl %es
	pushl %fs
	pushl %gs
	pushal
	/* The interrupted code may have left any selector in DS and ES (or
	 * none: VM86 entry nulls them), and DF set. */
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	cld
	pushl %esp
	call trap_dispatch
	addl $4, %esp
	popal
	popl %gs
	popl %fs
	popl %es
	popl %ds
	addl $8, %esp           /* vector and error code */
	iret

	.section .rodata
	.globl trap_vector_table
trap_vector_table:
	.set i, 0
	.rept 256
	VECTOR_ADDRESS %i
	.set i, i + 1
	.endr

/*
 * int trap_catch(void): setjmp for exceptions. Saves the caller's
 * callee-saved registers, stack pointer and return address, arms the
 * catcher and returns 0.
 */
	.text
	.globl trap_catch
trap_catch:
	movl (%esp), %eax
	movl %eax, catch_eip
	leal 4(%esp), %eax
	movl %eax, catch_esp
	movl %ebx, catch_ebx
	movl %esi, catch_esi
	movl %edi, catch_edi
	movl %ebp, catch_ebp
	movl $1, trap_armed
	xorl %eax, %eax
	ret

/* void trap_disarm(void): the statement finished without an exception. */
	.globl trap_disarm
trap_disarm:
	movl $0, trap_armed
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	ret

/*
 * void trap_unwind(void): longjmp for exceptions. Called from a handler
 * on whatever stack the CPU chose, at CPL 0; drops that frame and
 * returns 1 from the last trap_catch() with flat kernel segments and
 * EFLAGS = 2 (clears TF, NT, AC, IOPL and IF that a test may have set).
 */
	.globl trap_unwind
trap_unwind:
	movl $0, trap_armed
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movw %ax, %ss
	movl catch_esp, %esp
	pushl $EFLAGS_FIXED
	popfl
	movl catch_ebx, %ebx
	movl catch_esi, %esi
	movl catch_edi, %edi
	movl catch_ebp, %ebp
	movl $1, %eax
	jmp *catch_eip

/*
 * void user_enter(uint32_t eflags, void (*fn)(void)): IRET to CPL 3.
 * An IRET to an outer ring pops SS:ESP as well as CS:EIP:EFLAGS (SDM
 * Vol. 3A 6.12.1, figure 6-4). The data segment registers are loaded
 * with the user data selector first: IRET to CPL 3 would null any that
 * still held the DPL-0 kernel data selector.
 */
	.globl user_enter
user_enter:
	movl 4(%esp), %ecx
	movl 8(%esp), %edx
	movl $user_stack_top - 4, %eax
	movl %edx, (%eax)
	movl $SEL_UDATA, %ebx
	movw %bx, %ds
	movw %bx, %es
	movw %bx, %fs
	movw %bx, %gs
	pushl $SEL_UDATA
	pushl %eax
	pushl %ecx
	pushl $SEL_UCODE
	pushl $user_trampoline
	iret

user_trampoline:
	popl %eax
	call *%eax
	int $T_USER_DONE
	ud2

	.bss
	.align 4
catch_eip: .long 0
catch_esp: .long 0
catch_ebx: .long 0
catch_esi: .long 0
catch_edi: .long 0
catch_ebp: .long 0
	.globl trap_armed
trap_armed: .long 0

	.align 16
	.space STACK_SIZE
	.globl intr_stack_top
intr_stack_top:
	.space STACK_SIZE
	.globl user_stack_top
user_stack_top:

	.section .note.GNU-stack, "", @progbits
