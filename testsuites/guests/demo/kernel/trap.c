/*
 * trap.c: where every interrupt, exception and system call lands
 * (trapasm.S builds the trap frame and calls trap()).
 *
 * What happens depends on the vector, and for exceptions on where the
 * CPU was: the low two bits of the saved CS are the privilege level it
 * was running at (SDM Vol. 3A 5.5). A fault in ring 3 is the program's
 * fault: the kernel repairs it (demand paging) or kills the process. A
 * fault in ring 0 is a kernel bug: panic.
 */
#include "kernel.h"

volatile uint32_t ticks; /* timer interrupts since boot, 100 a second */

static const char *const exception_names[] = {
	"divide error", "debug exception", "NMI", "breakpoint", "overflow",
	"BOUND range exceeded", "invalid opcode", "device not available",
	"double fault", "coprocessor segment overrun", "invalid TSS",
	"segment not present", "stack-segment fault", "general protection fault",
	"page fault", "vector 15", "x87 floating-point error", "alignment check",
	"machine check", "SIMD floating-point exception",
};

static const char *trap_name(uint32_t vector)
{
	if (vector < ARRAY_SIZE(exception_names))
		return exception_names[vector];
	return vector < T_IRQ0 ? "reserved exception" : "unexpected interrupt";
}

static int from_user(const struct trapframe *tf)
{
	return (tf->cs & 3) == 3;
}

static NORETURN void kernel_fault(const struct trapframe *tf)
{
	panic("%s (vector %u, error code 0x%x) in the kernel at %p\n"
	      "  eflags %08x cr2 %08x\n"
	      "  eax %08x ebx %08x ecx %08x edx %08x\n"
	      "  esi %08x edi %08x ebp %08x",
	      trap_name(tf->vector), tf->vector, tf->error_code, tf->eip, tf->eflags,
	      read_cr2(), tf->eax, tf->ebx, tf->ecx, tf->edx, tf->esi, tf->edi, tf->ebp);
}

static NORETURN void kill_current(const struct trapframe *tf, const char *what)
{
	kprintf("pid %d (%s): %s at eip %p: killed\n", current->pid, current->name,
		what, tf->eip);
	proc_exit(-1);
}

/*
 * #PF: CR2 holds the linear address that faulted, the error code says
 * why (SDM Vol. 3A 4.7): P=0 for a page that is not present (maybe one
 * we promised and have not mapped yet: vm_fault), P=1 for a protection
 * violation (writing code, or touching kernel memory from ring 3).
 */
static void page_fault(struct trapframe *tf)
{
	uint32_t va = read_cr2();
	int result = -1;
	char what[80];

	if (!from_user(tf))
		kernel_fault(tf);
	if (!(tf->error_code & PF_P)) {
		result = vm_fault(current, va);
		if (result == 0)
			return; /* IRET re-executes the faulting instruction */
	}
	snprintf(what, sizeof(what), "page fault at %p (%s, %s)", va,
		 tf->error_code & PF_W ? "write" : "read",
		 result == -2                 ? "out of memory"
		 : tf->error_code & PF_P      ? "protection violation"
					      : "not mapped");
	kill_current(tf, what);
}

/* Ends an interrupt at the controller that delivered it. */
static void irq_done(int irq)
{
	if (use_apic)
		lapic_eoi();
	else
		pic_eoi(irq);
}

void trap(struct trapframe *tf)
{
	switch (tf->vector) {
	case T_SYSCALL:
		syscall(tf);
		return;
	case T_IRQ0 + IRQ_TIMER:
		ticks++;
		wakeup((const void *)&ticks);
		irq_done(IRQ_TIMER);
		/* Preemption: a process running in ring 3 has had its time
		 * slice (one tick) and goes to the back of the queue. */
		if (current && from_user(tf))
			yield();
		return;
	case T_IRQ0 + IRQ_KBD:
		kbd_intr();
		irq_done(IRQ_KBD);
		return;
	case T_IRQ0 + IRQ_COM1:
		console_intr();
		irq_done(IRQ_COM1);
		return;
	case T_IRQ0 + IRQ_SPURIOUS_PIC:
		/* The 8259A raises IRQ 7 when a request went away before the
		 * CPU acknowledged it. We never unmask IRQ 7, so this is
		 * that, and a spurious IRQ must not be acknowledged. */
		return;
	case T_APIC_SPURIOUS:
		/* Likewise for the LAPIC (SDM Vol. 3A 10.9): no EOI. */
		return;
	case T_PF:
		page_fault(tf);
		return;
	}
	if (from_user(tf))
		kill_current(tf, trap_name(tf->vector));
	kernel_fault(tf);
}
