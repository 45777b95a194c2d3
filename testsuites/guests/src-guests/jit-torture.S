/*
 * jit-torture.S: the code jit-torture.c cannot write in C, because the
 * exact instructions matter: stores into the next instruction, the long
 * straight-line block whose every memory access is made to fault in
 * turn, the function the debugger rewrites, and the tight loops the
 * timer interrupts.
 */
#include "guest.h"
#include "jit-torture.h"

	.text

/* ---- a store into the very next instruction ---- */

/* uint32_t next_immediate_loop(uint32_t n): each iteration stores its
 * counter (n down to 1) into the immediate of the MOV right after the
 * store, and adds what that MOV loads; returns the sum. */
	.globl next_immediate_loop
next_immediate_loop:
	movl 4(%esp), %ecx
	xorl %edx, %edx
1:	movl %ecx, 2f + 1
2:	movl $0, %eax
	addl %eax, %edx
	loop 1b
	movl %edx, %eax
	ret

/* uint32_t next_opcode_loop(uint32_t n): each iteration stores a byte
 * into the opcode of the next instruction: INC ESI (0x46) when the
 * counter is odd, INC EDX (0x42) when it is even. Returns EDX << 16 |
 * ESI: the even and odd counts. */
	.globl next_opcode_loop
next_opcode_loop:
	pushl %esi
	movl 8(%esp), %ecx
	xorl %edx, %edx
	xorl %esi, %esi
1:	movl %ecx, %eax
	andl $1, %eax
	shll $2, %eax
	addl $0x42, %eax
	movb %al, 2f
2:	incl %edx
	loop 1b
	shll $16, %edx
	leal (%edx, %esi), %eax
	popl %esi
	ret

/* ---- code the debugger (or a restored snapshot) changes ---- */

	.globl debugger_target, debugger_target_immediate
debugger_target:
	.byte 0xB8              /* movl $imm32, %eax */
debugger_target_immediate:
	.long DEBUGGER_TARGET_ORIGINAL
	ret

/* ---- the long block ----
 *
 * Runs at CPL 3 (run_user), so that every exception switches to the
 * ring-0 stack: the #SS tests leave no room on the block's own stack.
 * The stub loads the registers, DS and SS:ESP from block_ctx through
 * CS, which stays flat whatever DS and SS become. MOV SS holds off
 * debug traps until after the next instruction (SDM Vol. 3A 6.8.3),
 * so SS and ESP are loaded last, together.
 *
 * blk0-blk29 make 24 memory accesses: one to each of the 15 data pages
 * (EBX = WINDOW; slot p at page p, 4*p bytes in) and 9 to the stack.
 * jit-torture.c models each instruction (block_model_step) and lists the
 * accesses (block_accesses); keep the three in step.
 *
 * After blk29, block_repeats counts the runs: the block runs again from
 * the stub (its read-modify-write slots reset) until it reaches 0. */
	.globl long_block_entry
long_block_entry:
	movl %cs:block_ctx + CTX_EAX, %eax
	movl %cs:block_ctx + CTX_ECX, %ecx
	movl %cs:block_ctx + CTX_EDX, %edx
	movl %cs:block_ctx + CTX_EBX, %ebx
	movl %cs:block_ctx + CTX_EBP, %ebp
	movl %cs:block_ctx + CTX_ESI, %esi
	movl %cs:block_ctx + CTX_EDI, %edi
	movw %cs:block_ctx + CTX_DS, %ds
	movw %cs:block_ctx + CTX_SS, %ss
	movl %cs:block_ctx + CTX_ESP, %esp
blk0:	movl (%ebx), %eax
blk1:	addl $0x11111111, %eax
blk2:	movl %eax, 0x1004(%ebx)
blk3:	addl 0x2008(%ebx), %ecx
blk4:	pushl %eax
blk5:	xorl %ecx, %edx
blk6:	subl %edx, 0x300c(%ebx)
blk7:	incl %esi
blk8:	pushl 0x4010(%ebx)
blk9:	shll $3, %edx
blk10:	movl %edx, 0x5014(%ebx)
blk11:	popl %edi
blk12:	andl 0x6018(%ebx), %edi
blk13:	movl %edi, 0x701c(%ebx)
blk14:	pushl %edx
blk15:	addl %eax, 0x8020(%ebx)
blk16:	movzbl 0x9024(%ebx), %ebp
blk17:	orl %ebp, %eax
blk18:	xchgl %eax, 0xa028(%ebx)
blk19:	popl %ecx
blk20:	pushl $0x5a5a5a5a
blk21:	pushl %ebp
blk22:	addl 0xb02c(%ebx), %edx
blk23:	adcl %edx, %esi
blk24:	movl %esi, 0xc030(%ebx)
blk25:	popl %eax
blk26:	popl %edx
blk27:	cmpl %eax, 0xd034(%ebx)
blk28:	setz %cl
blk29:	movl %ecx, 0xe038(%ebx)
long_block_end:
	decl block_repeats
	jz 1f
	movl $D_INIT_3, 0x300c(%ebx)
	movl $D_INIT_8, 0x8020(%ebx)
	movl $D_INIT_10, 0xa028(%ebx)
	jmp long_block_entry
1:	int $T_USER_DONE

/* ---- tight loops with IRQ 0 arriving ---- */

/* The 8254's IRQ 0 at vector 0x20: count, EOI, IRET. */
	.globl tick_entry
tick_entry:
	pushl %eax
	movb $0x20, %al
	outb %al, $0x20         /* non-specific EOI to the master 8259A */
	incl ticks
	popl %eax
	iret

/* uint32_t irq_sum_loop(uint32_t n): n + (n-1) + ... + 1 with IF=1. */
	.globl irq_sum_loop
irq_sum_loop:
	movl 4(%esp), %ecx
	xorl %eax, %eax
	sti
1:	addl %ecx, %eax
	decl %ecx
	jnz 1b
	cli
	ret

/* void irq_store_loop(uint32_t *buf, uint32_t n): buf[i - 1] = 3 * i
 * for i = n down to 1, with IF=1. */
	.globl irq_store_loop
irq_store_loop:
	movl 4(%esp), %edx
	movl 8(%esp), %ecx
	sti
1:	leal (%ecx, %ecx, 2), %eax
	movl %eax, -4(%edx, %ecx, 4)
	decl %ecx
	jnz 1b
	cli
	ret

/* uint32_t irq_call_loop(uint32_t n): calls add_three n times with
 * IF=1; returns 3 * n. */
	.globl irq_call_loop
irq_call_loop:
	movl 4(%esp), %ecx
	xorl %eax, %eax
	sti
1:	call add_three
	decl %ecx
	jnz 1b
	cli
	ret
add_three:
	addl $3, %eax
	ret

/* void irq_rep_stos(uint32_t *buf, uint32_t n, uint32_t value): REP
 * STOSD with IF=1; an interrupt may arrive between iterations. */
	.globl irq_rep_stos
irq_rep_stos:
	pushl %edi
	movl 8(%esp), %edi
	movl 12(%esp), %ecx
	movl 16(%esp), %eax
	cld
	sti
	rep stosl
	cli
	popl %edi
	ret

/* uint32_t irq_spin_until(uint32_t target, uint32_t limit): spins with
 * IF=1 until the ISR has counted `target` ticks or `limit` turns have
 * passed; returns the turns left (0: the ticks never came). */
	.globl irq_spin_until
irq_spin_until:
	movl 4(%esp), %edx
	movl 8(%esp), %ecx
	sti
1:	cmpl %edx, ticks
	jae 2f
	decl %ecx
	jnz 1b
2:	cli
	movl %ecx, %eax
	ret

	.section .rodata
/* The address of each of the long block's instructions, then of the
 * instruction after the last. */
	.globl long_block_insns
	.balign 4
long_block_insns:
	.long blk0, blk1, blk2, blk3, blk4, blk5, blk6, blk7, blk8, blk9
	.long blk10, blk11, blk12, blk13, blk14, blk15, blk16, blk17, blk18, blk19
	.long blk20, blk21, blk22, blk23, blk24, blk25, blk26, blk27, blk28, blk29
	.long long_block_end

	.section .note.GNU-stack, "", @progbits
