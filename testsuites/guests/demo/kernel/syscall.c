/*
 * syscall.c: the system calls.
 *
 * `int $0x80` in ring 3 goes through the IDT's trap gate 0x80 (desc.c):
 * the CPU switches to the process's kernel stack (TSS.ESP0), pushes the
 * user's SS, ESP, EFLAGS, CS and EIP, and jumps to vector_128, which
 * pushes the rest of the trap frame (trapasm.S). trap() sends it here.
 * The user's registers are the arguments (syscall.h); the result goes
 * into the frame's EAX, and the IRET at the end of trapret takes it back
 * to the user's EAX, at the instruction after the INT.
 *
 * A user pointer is checked before the kernel touches it: it must lie
 * in user space and be mapped with the right permissions (vm.c,
 * user_range_ok), or the call fails with -1.
 */
#include "kernel.h"

static int sys_exit(struct trapframe *tf)
{
	proc_exit((int)tf->ebx);
}

static int sys_write(struct trapframe *tf)
{
	uint32_t fd = tf->ebx, buf = tf->ecx;
	int n = (int)tf->edx;

	if ((fd != 1 && fd != 2) || n < 0 || !user_range_ok(current, buf, n, 0))
		return -1;
	console_write((const char *)buf, n);
	return n;
}

static int sys_read(struct trapframe *tf)
{
	uint32_t fd = tf->ebx, buf = tf->ecx;
	int n = (int)tf->edx;

	if (fd != 0 || n <= 0 || !user_range_ok(current, buf, n, 1))
		return -1;
	return console_read((char *)buf, n);
}

static int sys_getpid(struct trapframe *tf)
{
	(void)tf;
	return current->pid;
}

static int sys_yield(struct trapframe *tf)
{
	(void)tf;
	yield();
	return 0;
}

/* Sleeps for at least `ticks` timer ticks. The tick count may wrap;
 * the signed difference stays right across the wrap. */
static int sys_sleep(struct trapframe *tf)
{
	int n = (int)tf->ebx;
	uint32_t flags, until;

	if (n < 0)
		return -1;
	flags = irq_save();
	until = ticks + n;
	while ((int32_t)(ticks - until) < 0)
		sleep_on((const void *)&ticks);
	irq_restore(flags);
	return 0;
}

/*
 * Moves the end of the heap by `increment` bytes and returns the old
 * end. Growing maps nothing: the pages appear, zeroed, when first
 * touched (vm.c, vm_fault). Shrinking frees the pages past the new end.
 */
static int sys_sbrk(struct trapframe *tf)
{
	int increment = (int)tf->ebx;
	uint32_t old = current->brk, new = old + increment;

	if (increment > 0 && (new < old || new > USER_HEAP_LIMIT))
		return -1;
	if (increment < 0 && (new > old || new < current->heap_start))
		return -1;
	if (increment < 0)
		uvm_unmap(current->pgdir, new, old);
	current->brk = new;
	return (int)old;
}

static int (*const syscalls[])(struct trapframe *) = {
	[SYS_exit] = sys_exit,     [SYS_write] = sys_write, [SYS_read] = sys_read,
	[SYS_getpid] = sys_getpid, [SYS_yield] = sys_yield, [SYS_sleep] = sys_sleep,
	[SYS_sbrk] = sys_sbrk,
};

void syscall(struct trapframe *tf)
{
	uint32_t number = tf->eax;

	if (number < ARRAY_SIZE(syscalls) && syscalls[number])
		tf->eax = (uint32_t)syscalls[number](tf);
	else
		tf->eax = (uint32_t)-1;
}
