/*
 * smc.S: code that rewrites code. Each function returns, in EAX, a value
 * that tells which version of the patched instruction ran.
 *
 * page_a and page_b are separate 4-KiB pages so that "same page" and
 * "other page" mean what they say.
 */
#include "guest.h"

	.text
	.balign 4096
page_a:

/* Runs same_page_target, patches its immediate (same page), jumps as
 * SDM Vol. 3A 8.1.3 recommends, and runs it again. Returns the first
 * result in the high word of EAX and the second in the low word. */
	.globl smc_same_page
smc_same_page:
	call same_page_target
	movl %eax, %ecx
	shll $16, %ecx
	movl $0x0002, same_page_target + 1
	jmp 1f
1:	call same_page_target
	orl %ecx, %eax
	ret

same_page_target:
	movl $0x0001, %eax
	ret

/* The same with the target in page_b; this time the patch replaces an
 * opcode: INC EAX (0x40) becomes DEC EAX (0x48). */
	.globl smc_other_page
smc_other_page:
	call other_page_target
	movl %eax, %ecx
	shll $16, %ecx
	movb $0x48, other_page_opcode
	jmp 1f
1:	call other_page_target
	orl %ecx, %eax
	ret

/* int smc_next_instruction(int v): stores v into the immediate of the
 * very next instruction, with no jump in between, and returns what that
 * instruction loads. The store hits code already fetched and decoded;
 * the processor detects it (SDM Vol. 3A 11.6) and runs the new bytes. */
	.globl smc_next_instruction
smc_next_instruction:
	movl 4(%esp), %ecx
	movl %ecx, 1f + 1
1:	movl $0, %eax
	ret

/* int smc_run_hot(int n): calls hot_target n times, returns the sum. */
	.globl smc_run_hot
smc_run_hot:
	movl 4(%esp), %ecx
	xorl %edx, %edx
1:	call hot_target
	addl %eax, %edx
	loop 1b
	movl %edx, %eax
	ret

	.globl hot_target, hot_target_immediate
hot_target:
	.byte 0xB8              /* movl $imm32, %eax */
hot_target_immediate:
	.long 1
	ret

	.balign 4096
page_b:
other_page_target:
	movl $0x10, %eax
	.globl other_page_opcode
other_page_opcode:
	incl %eax
	ret

	.globl alias_target, alias_target_immediate
alias_target:
	.byte 0xB8              /* movl $imm32, %eax */
alias_target_immediate:
	.long 0xA
	ret

	.balign 4096

	.section .note.GNU-stack, "", @progbits
