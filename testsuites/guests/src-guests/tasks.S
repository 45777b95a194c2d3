/*
 * tasks.S: both sides of each task switch in tasks.c. The task_*_entry
 * labels are where tasks B, C and D start (their TSS.EIP); each records
 * what it sees and switches back. The other functions run in task A,
 * the runtime's main TSS.
 */
#include "guest.h"
#include "tasks.h"

	.text

/* Task A: load known values into every register, set CF, put a DPL-3
 * selector in FS, and JMP to task B. B jumps back; A resumes after the
 * JMP with the registers the CPU saved in A's TSS and reloaded. */
	.globl jmp_to_task_b
jmp_to_task_b:
	pushal
	movl $SEL_UDATA, %eax
	movw %ax, %fs
	movl $0xA0000001, %eax
	movl $0xA0000002, %ecx
	movl $0xA0000003, %edx
	movl $0xA0000004, %ebx
	movl $0xA0000005, %ebp
	movl $0xA0000006, %esi
	movl $0xA0000007, %edi
	stc
	ljmp $TSS_B_SEL, $0
	.globl task_a_resume
task_a_resume:
	movl %eax, a_after + 0
	movl %ecx, a_after + 4
	movl %edx, a_after + 8
	movl %ebx, a_after + 12
	movl %ebp, a_after + 16
	movl %esi, a_after + 20
	movl %edi, a_after + 24
	pushfl
	popl a_after + 28
	movw %fs, a_after + 32
	movl $SEL_KDATA, %eax
	movw %ax, %fs
	popal
	ret

/* Task B, entered by JMP: record TR, EFLAGS, two registers loaded from
 * TSS B, and the busy bits of A and B, then JMP back to A. */
	.globl task_b_entry
task_b_entry:
	str b_seen + 0
	pushfl
	popl b_seen + 4
	movl %ebx, b_seen + 8
	movl %esi, b_seen + 12
	movl gdt + (SEL_TSS + 4), %eax
	movl %eax, b_seen + 16
	movl gdt + (TSS_B_SEL + 4), %eax
	movl %eax, b_seen + 20
	ljmp $SEL_TSS, $0
	jmp task_b_entry

/* Task A: CALL through the task gate; task C returns with IRET. */
	.globl call_task_gate
call_task_gate:
	pushal
	lcall $TASK_GATE_C_SEL, $0
	popal
	ret

	.globl task_c_entry
task_c_entry:
	str c_seen + 0
	pushfl
	popl c_seen + 4
	movl gdt + (SEL_TSS + 4), %eax
	movl %eax, c_seen + 8
	movl gdt + (TSS_C_SEL + 4), %eax
	movl %eax, c_seen + 12
	iret
	jmp task_c_entry

/* Task A: a #GP (selector past the GDT limit) delivered through the task
 * gate at IDT vector 13. Task D moves A's saved EIP past the faulting
 * MOV and returns with IRET. */
	.globl gp_through_task_gate
gp_through_task_gate:
	pushal
	movl $1f, d_expected_eip
	movl $2f, d_resume_eip
	movl $SEL_PAST_GDT, %eax
1:	movw %ax, %es
2:	popal
	ret

	.globl task_d_entry
task_d_entry:
	popl d_seen + 0                 /* the error code, on D's own stack */
	str d_seen + 4
	pushfl
	popl d_seen + 8
	movl main_tss + TSS_EIP, %eax
	movl %eax, d_seen + 12
	movl d_resume_eip, %eax
	movl %eax, main_tss + TSS_EIP
	iret
	jmp task_d_entry

/* Task A: IRET with NT=1 returns to the task in A's back link. It must
 * be busy; pointing the link at an available TSS raises #TS. */
	.globl iret_to_available_task
iret_to_available_task:
	movw $TSS_B_SEL, main_tss + TSS_LINK
	pushfl
	orl $EFLAGS_NT, (%esp)
	popfl
	iret

	.bss
	.align 4
	.globl a_after, b_seen, c_seen, d_seen, d_expected_eip, d_resume_eip
a_after: .space 9 * 4
b_seen: .space 6 * 4
c_seen: .space 4 * 4
d_seen: .space 4 * 4
d_expected_eip: .long 0
d_resume_eip: .long 0

	.section .note.GNU-stack, "", @progbits
