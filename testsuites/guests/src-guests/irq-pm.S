/*
 * irq-pm.S: the entry of irq-pm's IRQ 0 handler, and its way back.
 *
 * An interrupt gate from CPL 0 to CPL 0 pushes EFLAGS, CS and EIP and
 * clears IF (SDM Vol. 3A 6.12.1). We save the general registers around
 * the C handler; the segment registers stay the flat kernel ones.
 *
 * The return does what IRET does at the same privilege level (SDM Vol.
 * 2A IRET, "RETURN-TO-SAME-PRIVILEGE-LEVEL": EIP, CS, then EFLAGS) in
 * two instructions: POPF the saved EFLAGS from a copy, then a far RET
 * that pops EIP and CS and discards the original EFLAGS. The only
 * difference is that an interrupt may be taken between the two, which
 * nests on the same stack harmlessly. We avoid IRET on purpose: on
 * hosts whose KVM runs unpaged protected mode through Linux's
 * instruction emulator (kvm_pvm; arch/x86/kvm/emulate.c em_iret
 * implements IRET in real mode only), a protected-mode IRET stops the
 * guest with an emulation failure, and this guest exists to compare the
 * kvm engine with the others on exactly such hosts.
 */
#include "guest.h"

	.text
	.globl timer_entry
timer_entry:
	pushal
	cld
	call timer_interrupt
	popal
	pushl 8(%esp)           /* the interrupted EFLAGS */
	popfl
	lret $4
