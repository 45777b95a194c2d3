/*
 * proc.c: processes and the scheduler.
 *
 * A process is a kernel stack, an address space and a slot in `procs`.
 * It runs in ring 3 (a user program) or entirely in ring 0 (a kernel
 * thread: the shell). Each has its own kernel stack, on which it keeps
 * its trap frame when it entered the kernel from ring 3 and its context
 * (saved registers) when it is switched out.
 *
 * The scheduler is a loop on the boot stack, as in xv6: it picks a
 * RUNNABLE process, switches to it with swtch(), and gets control back
 * when that process calls sched() (it yields, sleeps or exits). When
 * nothing is runnable it halts with interrupts enabled; the next
 * interrupt (a timer tick, a byte on COM1) may wake a process up.
 *
 * Locking. There is one CPU, and kernel code is never preempted: the
 * timer takes the CPU away only from a process in ring 3 (trap.c). So
 * kernel code owns the CPU until it calls sched(), and needs no locks,
 * except against interrupt handlers: what they touch (the tick count,
 * the console ring, process states through wakeup()) is touched
 * elsewhere only with interrupts off (irq_save/irq_restore).
 */
#include "kernel.h"

#define NPROC 16

static struct proc procs[NPROC];
struct proc *current; /* NULL while the scheduler itself runs */
static struct context *scheduler_context;
static int next_pid = 1;

static const char *const state_names[] = {
	[UNUSED] = "unused", [RUNNABLE] = "runnable", [RUNNING] = "running",
	[SLEEPING] = "sleeping", [ZOMBIE] = "zombie",
};

/* A slot with a kernel stack; the caller fills in the rest and makes it
 * RUNNABLE. Slots are taken and freed only by process code (never by an
 * interrupt handler), so this needs no lock. */
static struct proc *alloc_proc(const char *name)
{
	for (struct proc *p = procs; p < procs + NPROC; p++) {
		if (p->state != UNUSED)
			continue;
		uint8_t *kstack = kalloc();

		if (!kstack)
			return NULL;
		memset(p, 0, sizeof(*p));
		p->kstack = kstack;
		p->pid = next_pid++;
		strlcpy(p->name, name, sizeof(p->name));
		p->parent = current;
		return p;
	}
	return NULL;
}

static void free_proc(struct proc *p)
{
	if (p->pgdir && p->pgdir != kernel_pgdir)
		uvm_free(p->pgdir);
	kfree(p->kstack);
	p->state = UNUSED;
}

/*
 * Creates a process that will start running `image` in ring 3. Its
 * kernel stack is made to look as if it had been interrupted in user
 * mode at the program's entry point: a trap frame at the top, and below
 * it a context whose return address is trapret. The first swtch() to it
 * "returns" into trapret, which pops the frame and IRETs to ring 3.
 */
struct proc *spawn_user(const char *name, const uint8_t *image, uint32_t size)
{
	struct proc *p = alloc_proc(name);
	struct trapframe *tf;
	uint32_t entry, end;

	if (!p)
		return NULL;
	p->pgdir = uvm_create();
	if (!p->pgdir || elf_load(p->pgdir, image, size, &entry, &end) < 0) {
		free_proc(p);
		return NULL;
	}
	p->heap_start = p->brk = PAGE_ROUND_UP(end);

	tf = (struct trapframe *)(p->kstack + KSTACK_SIZE) - 1;
	p->tf = tf;
	tf->cs = SEL_UCODE;
	tf->ds = tf->es = tf->fs = tf->gs = tf->ss = SEL_UDATA;
	tf->eflags = EFLAGS_FIXED | EFLAGS_IF;
	tf->eip = entry;
	tf->esp = USER_STACK_TOP; /* the first push faults the stack in */

	p->context = (struct context *)tf - 1;
	memset(p->context, 0, sizeof(*p->context));
	p->context->eip = (uint32_t)trapret;
	p->state = RUNNABLE;
	return p;
}

/* A process that runs fn in ring 0, in the kernel's address space. */
struct proc *spawn_kernel_thread(const char *name, void (*fn)(void))
{
	struct proc *p = alloc_proc(name);

	if (!p)
		return NULL;
	p->pgdir = kernel_pgdir;
	p->context = (struct context *)(p->kstack + KSTACK_SIZE) - 1;
	memset(p->context, 0, sizeof(*p->context));
	p->context->eip = (uint32_t)kthread_start;
	p->context->ebx = (uint32_t)fn;
	p->state = RUNNABLE;
	return p;
}

/* Round robin: the first RUNNABLE process after the last one run. */
static struct proc *pick_next(void)
{
	static int last;

	for (int i = 1; i <= NPROC; i++) {
		int n = (last + i) % NPROC;

		if (procs[n].state == RUNNABLE) {
			last = n;
			return &procs[n];
		}
	}
	return NULL;
}

NORETURN void scheduler(void)
{
	for (;;) {
		struct proc *p;

		cli();
		p = pick_next();
		if (!p) {
			sti_hlt();
			continue;
		}
		/* Interrupts from ring 3 must arrive on p's kernel stack,
		 * and p's user addresses must mean p's pages. */
		tss_set_kernel_stack((uint32_t)(p->kstack + KSTACK_SIZE));
		write_cr3((uint32_t)p->pgdir);
		p->state = RUNNING;
		current = p;
		swtch(&scheduler_context, p->context);
		current = NULL;
		write_cr3((uint32_t)kernel_pgdir);
	}
}

/* Back to the scheduler; the caller has set current->state and turned
 * interrupts off. Returns when the scheduler picks this process again. */
static void sched(void)
{
	if (read_eflags() & EFLAGS_IF)
		panic("sched with interrupts enabled");
	swtch(&current->context, scheduler_context);
}

void yield(void)
{
	uint32_t flags = irq_save();

	current->state = RUNNABLE;
	sched();
	irq_restore(flags);
}

/*
 * Sleeps until wakeup(chan); a channel is any address both sides agree
 * on. Called with interrupts off, after checking the condition it waits
 * for: an interrupt handler cannot then slip its wakeup() in between the
 * check and the sleep and leave us sleeping forever.
 */
void sleep_on(const void *chan)
{
	if (read_eflags() & EFLAGS_IF)
		panic("sleep_on with interrupts enabled");
	current->chan = chan;
	current->state = SLEEPING;
	sched();
	current->chan = NULL;
}

/* Interrupts off, or called from an interrupt handler. */
void wakeup(const void *chan)
{
	for (struct proc *p = procs; p < procs + NPROC; p++)
		if (p->state == SLEEPING && p->chan == chan)
			p->state = RUNNABLE;
}

/*
 * Ends the current process. Its user memory is freed now; its kernel
 * stack, which we are running on, is freed by the parent in proc_wait.
 * CR3 must leave the page directory before it is freed: a freed page
 * is reused, and the CPU would be walking whatever is written there.
 */
NORETURN void proc_exit(int status)
{
	struct proc *p = current;

	cli();
	if (!p->parent)
		panic("%s (pid %d) exited", p->name, p->pid);
	if (p->pgdir != kernel_pgdir) {
		write_cr3((uint32_t)kernel_pgdir);
		uvm_free(p->pgdir);
		p->pgdir = NULL;
	}
	p->exit_status = status;
	p->state = ZOMBIE;
	wakeup(p->parent);
	sched();
	panic("a zombie ran");
}

/* Waits for child `pid` to exit; returns pid and its exit status, or -1
 * if there is no such child. */
int proc_wait(int pid, int *status)
{
	uint32_t flags = irq_save();

	for (;;) {
		struct proc *child = NULL;

		for (struct proc *p = procs; p < procs + NPROC; p++)
			if (p->state != UNUSED && p->pid == pid && p->parent == current)
				child = p;
		if (!child) {
			irq_restore(flags);
			return -1;
		}
		if (child->state == ZOMBIE) {
			*status = child->exit_status;
			free_proc(child);
			irq_restore(flags);
			return pid;
		}
		sleep_on(current);
	}
}

/* Collects one child that has exited, without waiting; returns 0 if none. */
int proc_reap_any(int *pid, int *status)
{
	uint32_t flags = irq_save();

	for (struct proc *p = procs; p < procs + NPROC; p++) {
		if (p->state == ZOMBIE && p->parent == current) {
			*pid = p->pid;
			*status = p->exit_status;
			free_proc(p);
			irq_restore(flags);
			return 1;
		}
	}
	irq_restore(flags);
	return 0;
}

void proc_list(void)
{
	uint32_t flags = irq_save();

	kprintf("  PID  STATE     NAME\n");
	for (struct proc *p = procs; p < procs + NPROC; p++)
		if (p->state != UNUSED)
			kprintf("%5d  %-9s %s\n", p->pid, state_names[p->state], p->name);
	irq_restore(flags);
}
