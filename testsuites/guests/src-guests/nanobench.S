/*
 * nanobench.S: the loops nanobench.c times, and the handlers they enter.
 *
 * Every loop has the same shape: RDTSC into EBP:EDI, the operation,
 * `DEC ESI; JNZ` back to it, RDTSC again. So between the two RDTSCs
 * (counting retired instructions) each iteration costs the operation,
 * whatever handler it enters, and two instructions of loop, plus a few
 * instructions of setup once.
 *
 * The kernel loops are C functions `uint64_t loop_OP(uint32_t n, ...)`
 * returning the TSC ticks the n iterations took. The user loops run at
 * CPL 3 through run_user(): they read n from nanobench_user_iters, leave
 * the two TSC readings in nanobench_user_tsc[] and end with
 * `int $VEC_USER_BENCH_DONE`.
 *
 * The handlers are minimal on purpose: count the invocation, then go
 * back. The #PF and #DE handlers resume after the faulting instruction by
 * adding its length to the saved EIP (a fault saves the EIP of the
 * faulting instruction, SDM Vol. 3A 6.5); the `.error` checks below keep
 * that length honest.
 */
#include "guest.h"
#include "nanobench.h"

/* R/W in a PTE: guest.h's PTE_W, which only C sees. */
#define PTE_RW 0x002

/* Callee-saved registers, n into ESI, then the first TSC reading. */
.macro KERNEL_LOOP_BEGIN
	pushl %ebx
	pushl %esi
	pushl %edi
	pushl %ebp
	movl 20(%esp), %esi
.endm
.macro TSC_START
	rdtsc
	movl %eax, %edi
	movl %edx, %ebp
.endm
/* EDX:EAX = TSC now minus the TSC at TSC_START. */
.macro TSC_ELAPSED
	rdtsc
	subl %edi, %eax
	sbbl %ebp, %edx
.endm
.macro KERNEL_LOOP_RETURN
	popl %ebp
	popl %edi
	popl %esi
	popl %ebx
	ret
.endm
.macro KERNEL_LOOP_END
	TSC_ELAPSED
	KERNEL_LOOP_RETURN
.endm
.macro USER_LOOP_END
	rdtsc
	movl %edi, nanobench_user_tsc
	movl %ebp, nanobench_user_tsc + 4
	movl %eax, nanobench_user_tsc + 8
	movl %edx, nanobench_user_tsc + 12
	int $VEC_USER_BENCH_DONE
	ud2
.endm

	.text

/* ---- CPL 3 ---- */

	.globl user_loop_int80
user_loop_int80:
	movl nanobench_user_iters, %esi
	TSC_START
1:	int $0x80
	decl %esi
	jnz 1b
	USER_LOOP_END

/* SYSENTER leaves ECX and EDX alone, and SYSEXIT loads ESP from ECX and
 * EIP from EDX (SDM Vol. 2B), so they are set once, outside the loop
 * (after RDTSC, which writes EDX). */
	.globl user_loop_sysenter
user_loop_sysenter:
	movl nanobench_user_iters, %esi
	TSC_START
	movl %esp, %ecx
	movl $2f, %edx
1:	sysenter
2:	decl %esi
	jnz 1b
	USER_LOOP_END

/* ---- CPL 0 ---- */

	.globl loop_in
loop_in:
	KERNEL_LOOP_BEGIN
	TSC_START
1:	inb $PORT_IN, %al
	decl %esi
	jnz 1b
	KERNEL_LOOP_END

/* loop_tpr(n, apic): writes 0 to the TPR, as an OS lowering its priority. */
	.globl loop_tpr
loop_tpr:
	KERNEL_LOOP_BEGIN
	movl 24(%esp), %ebx
	xorl %ecx, %ecx
	TSC_START
1:	movl %ecx, LAPIC_TPR(%ebx)
	decl %esi
	jnz 1b
	KERNEL_LOOP_END

	.globl loop_call_ret
loop_call_ret:
	KERNEL_LOOP_BEGIN
	TSC_START
1:	call just_ret
	decl %esi
	jnz 1b
	KERNEL_LOOP_END
just_ret:
	ret

/* loop_pagefault(n, absent): reads a not-present page; every read
 * faults, since nothing maps it, and nanobench_pf_entry skips the read. */
	.globl loop_pagefault
loop_pagefault:
	KERNEL_LOOP_BEGIN
	movl 24(%esp), %ebx
	TSC_START
1:	movl (%ebx), %eax
2:	decl %esi
	jnz 1b
	.if (2b - 1b) - PF_INSN_LEN
	.error "the #PF handler skips PF_INSN_LEN bytes"
	.endif
	KERNEL_LOOP_END

	.globl loop_divzero
loop_divzero:
	KERNEL_LOOP_BEGIN
	xorl %ecx, %ecx
	TSC_START
1:	divl %ecx
2:	decl %esi
	jnz 1b
	.if (2b - 1b) - DE_INSN_LEN
	.error "the #DE handler skips DE_INSN_LEN bytes"
	.endif
	KERNEL_LOOP_END

/* loop_ptemod(n, pte, linear): flips R/W in the PTE that maps `linear`
 * in the live page table, and flushes its TLB entry (SDM Vol. 3A
 * 4.10.4.1: software must invalidate after changing a PTE). */
	.globl loop_ptemod
loop_ptemod:
	KERNEL_LOOP_BEGIN
	movl 24(%esp), %ebx
	movl 28(%esp), %ecx
	TSC_START
1:	xorl $PTE_RW, (%ebx)
	invlpg (%ecx)
	decl %esi
	jnz 1b
	KERNEL_LOOP_END

/* The 8259As are masked and no timer runs, so no interrupt arrives in
 * the window STI opens. */
	.globl loop_cli_sti
loop_cli_sti:
	KERNEL_LOOP_BEGIN
	TSC_START
1:	cli
	sti
	decl %esi
	jnz 1b
	TSC_ELAPSED
	cli
	KERNEL_LOOP_RETURN

	.globl loop_pushf_popf
loop_pushf_popf:
	KERNEL_LOOP_BEGIN
	TSC_START
1:	pushfl
	popfl
	decl %esi
	jnz 1b
	KERNEL_LOOP_END

/* ---- handlers (CPL 0) ---- */

/* INT 0x80 from CPL 3: an interrupt gate of DPL 3. */
	.globl nanobench_int80_entry
nanobench_int80_entry:
	incl nanobench_handled
	iret

/* SYSENTER: CS, SS, ESP and EIP from the MSRs; back with SYSEXIT. The
 * count goes through the user's DS, which is flat. */
	.globl nanobench_sysenter_entry
nanobench_sysenter_entry:
	incl nanobench_handled
	sysexit

/* #PF pushes an error code below the saved EIP. */
	.globl nanobench_pf_entry
nanobench_pf_entry:
	incl nanobench_handled
	addl $PF_INSN_LEN, 4(%esp)
	addl $4, %esp
	iret

	.globl nanobench_de_entry
nanobench_de_entry:
	incl nanobench_handled
	addl $DE_INSN_LEN, (%esp)
	iret

	.bss
	.align 4
	.globl nanobench_handled
nanobench_handled: .long 0
	.globl nanobench_user_iters
nanobench_user_iters: .long 0
	.globl nanobench_user_tsc
nanobench_user_tsc: .long 0, 0, 0, 0

	.section .note.GNU-stack, "", @progbits
