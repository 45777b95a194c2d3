/*
 * privilege.S: the code on both sides of each privilege transition in
 * privilege.c. Functions named user_* run at CPL 3 (through run_user);
 * the *_entry labels are ring-0 targets of gates and SYSENTER. They
 * leave what they saw in the variables at the bottom.
 */
#include "guest.h"
#include "privilege.h"

	.text

/* CPL 3: push two parameters and call through the DPL-3 call gate. */
	.globl user_call_gate
user_call_gate:
	pushl $PARAM_FIRST
	pushl $PARAM_SECOND
	movl %esp, gate_user_esp
	lcall $GATE_DPL3_SEL, $0
	.globl gate_return
gate_return:
	movl %esp, gate_user_esp_after
	movw %cs, gate_cs_after
	movw %es, gate_es_after
	ret

/* CPL 0, on the TSS.ESP0 stack: copy the frame the call pushed (EIP, CS,
 * the parameters, old ESP, old SS), put the DPL-0 data selector in ES,
 * and return with RET 8 to drop the parameters from both stacks. */
	.globl call_gate_entry
call_gate_entry:
	movl %esp, gate_entry_esp
	xorl %ecx, %ecx
1:	movl (%esp,%ecx,4), %eax
	movl %eax, gate_frame(,%ecx,4)
	incl %ecx
	cmpl $6, %ecx
	jne 1b
	movw %cs, gate_entry_cs
	movw %ss, gate_entry_ss
	movl $SEL_KDATA, %eax
	movw %ax, %es
	lret $(GATE_PARAMS * 4)

/* CPL 3: an interrupt gate and a trap gate, each returning here. */
	.globl user_int_gates
user_int_gates:
	movl %esp, int_user_esp
	int $VEC_INT_GATE3
	.globl int_return
int_return:
	int $VEC_TRAP_GATE3
	ret

/* CPL 0: IRET to CPL 3 holding DPL-0 data in DS and ES, DPL-3 data in
 * FS, and DPL-0 conforming code in GS; CPL 3 then records what is left.
 * DS is null by then, so the stores go through SS. */
	.globl iret_with_kernel_segments
iret_with_kernel_segments:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movl $SEL_UDATA, %eax
	movw %ax, %fs
	movl $CONFORMING_SEL, %eax
	movw %ax, %gs
	pushl $SEL_UDATA
	pushl $user_stack_top
	pushl $EFLAGS_FIXED
	pushl $SEL_UCODE
	pushl $1f
	iret
1:	movw %ds, %ss:seen_ds
	movw %es, %ss:seen_es
	movw %fs, %ss:seen_fs
	movw %gs, %ss:seen_gs
	int $T_USER_DONE

/* CPL 3: SYSENTER, with ECX and EDX holding the ESP and EIP SYSEXIT
 * will load. */
	.globl user_sysenter
user_sysenter:
	movl %esp, %ecx
	movl %esp, sysenter_user_esp
	movl $sysexit_return, %edx
	sysenter
	.globl sysexit_return
sysexit_return:
	movw %cs, sysexit_cs
	movw %ss, sysexit_ss
	movl %esp, sysexit_esp
	ret

	.globl sysenter_entry
sysenter_entry:
	movw %cs, sysenter_cs
	movw %ss, sysenter_ss
	movl %esp, sysenter_esp
	pushfl
	popl sysenter_eflags
	sysexit

/* CPL 3: things CPL 3 may not do, and a few it may. */
	.globl user_load_kernel_ds
user_load_kernel_ds:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	ret

	.globl user_load_ds_rpl0
user_load_ds_rpl0:
	movl $(SEL_UDATA & ~3), %eax
	movw %ax, %ds
	ret

	.globl user_call_dpl0_gate
user_call_dpl0_gate:
	lcall $GATE_DPL0_SEL, $0
	ret

	.globl user_int_dpl0_gate
user_int_dpl0_gate:
	int $VEC_INT_GATE0
	ret

	.globl user_cli
user_cli:
	cli
	ret

	.globl user_in_allowed
user_in_allowed:
	movw $PORT_ALLOWED, %dx
	inb %dx, %al
	ret

	.globl user_in_denied
user_in_denied:
	movw $PORT_DENIED, %dx
	inb %dx, %al
	ret

/* POPF at CPL > IOPL leaves IF and IOPL alone, silently. */
	.globl user_popf
user_popf:
	pushfl
	orl $(EFLAGS_IF | EFLAGS_IOPL(3)), (%esp)
	popfl
	pushfl
	popl flags_after_popf
	ret

	.globl user_lret_to_ring0
user_lret_to_ring0:
	pushl $SEL_KCODE
	pushl $1f
	lret
1:	ret

	.globl user_iret_to_ring0
user_iret_to_ring0:
	pushfl
	pushl $SEL_KCODE
	pushl $1f
	iret
1:	ret

/* A far call to a conforming segment keeps CPL 3 (SDM Vol. 3A 5.8.1.2). */
	.globl user_call_conforming
user_call_conforming:
	lcall $CONFORMING_SEL, $conforming_target
	ret
conforming_target:
	movw %cs, conforming_cs
	lret

	.bss
	.align 4
	.globl gate_user_esp, gate_user_esp_after, gate_cs_after, gate_es_after
	.globl gate_entry_esp, gate_frame, gate_entry_cs, gate_entry_ss
	.globl int_user_esp, seen_ds, seen_es, seen_fs, seen_gs
	.globl sysenter_user_esp, sysexit_cs, sysexit_ss, sysexit_esp
	.globl sysenter_cs, sysenter_ss, sysenter_esp, sysenter_eflags
	.globl flags_after_popf, conforming_cs
gate_user_esp: .long 0
gate_user_esp_after: .long 0
gate_cs_after: .long 0
gate_es_after: .long 0
gate_entry_esp: .long 0
gate_frame: .space 6 * 4
gate_entry_cs: .long 0
gate_entry_ss: .long 0
int_user_esp: .long 0
seen_ds: .long 0
seen_es: .long 0
seen_fs: .long 0
seen_gs: .long 0
sysenter_user_esp: .long 0
sysexit_cs: .long 0
sysexit_ss: .long 0
sysexit_esp: .long 0
sysenter_cs: .long 0
sysenter_ss: .long 0
sysenter_esp: .long 0
sysenter_eflags: .long 0
flags_after_popf: .long 0
conforming_cs: .long 0

	.section .note.GNU-stack, "", @progbits
