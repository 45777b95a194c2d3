/*
 * kernel.h: the kernel's memory layout, its data structures, and the
 * functions each file offers the others. Read this first; every .c file
 * includes it.
 */
#ifndef KERNEL_H
#define KERNEL_H

#include "x86.h"
#include "syscall.h"

/* ---- memory layout (README.md has the picture) ----
 *
 * Every address space maps the kernel the same way: physical memory
 * below 1 GiB appears at the same virtual address (an identity map),
 * supervisor-only, so the kernel can use a physical address as a
 * pointer whatever CR3 holds. User programs live in [USER_BASE,
 * USER_STACK_TOP), which is different in every process. */
#define PAGE_SIZE 4096
#define PHYS_LIMIT 0x40000000u /* RAM above this is not used */
#define USER_BASE 0x40000000u  /* programs are linked here (user/user.ld) */
#define USER_STACK_TOP 0x80000000u
#define USER_STACK_SIZE 0x00100000u /* grows on demand, at most 1 MiB */
#define USER_STACK_BOTTOM (USER_STACK_TOP - USER_STACK_SIZE)
/* The heap may grow up to one unmapped guard page below the stack. */
#define USER_HEAP_LIMIT (USER_STACK_BOTTOM - PAGE_SIZE)
#define KSTACK_SIZE PAGE_SIZE

#define PAGE_ROUND_DOWN(a) ((uint32_t)(a) & ~(PAGE_SIZE - 1))
#define PAGE_ROUND_UP(a) (((uint32_t)(a) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))

/* Page directory and page table entries (SDM Vol. 3A 4.3, tables 4-5
 * and 4-6). */
#define PTE_P 0x001   /* present */
#define PTE_W 0x002   /* writable */
#define PTE_U 0x004   /* user: ring 3 may access */
#define PTE_PWT 0x008 /* write-through */
#define PTE_PCD 0x010 /* cache disable: for device registers */
#define PTE_ADDR(e) ((e) & ~0xFFFu)
#define PDX(va) ((uint32_t)(va) >> 22)          /* directory index */
#define PTX(va) (((uint32_t)(va) >> 12) & 0x3FF) /* table index */

/* #PF error code bits (SDM Vol. 3A 4.7). */
#define PF_P 0x1 /* 0: page not present; 1: protection violation */
#define PF_W 0x2 /* the access was a write */
#define PF_U 0x4 /* the access came from ring 3 */

/* ---- segments (kernel/desc.c) ----
 * Flat segments: base 0, limit 4 GiB. Protection comes from paging; the
 * segments exist because protected mode requires them, and because the
 * DPL of CS is the CPL (SDM Vol. 3A 5.5). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1B /* GDT index 3, RPL 3 */
#define SEL_UDATA 0x23 /* GDT index 4, RPL 3 */
#define SEL_TSS 0x28

/* ---- interrupt vectors ----
 * 0-31 are the CPU's exceptions (SDM Vol. 3A 6.2, table 6-1). Hardware IRQs are
 * moved to 32-47 on both interrupt paths, so IRQ n is vector 32 + n
 * whether the 8259A or the IOAPIC delivers it. */
#define T_DE 0
#define T_DB 1
#define T_BP 3
#define T_UD 6
#define T_DF 8
#define T_GP 13
#define T_PF 14
#define T_IRQ0 32
#define IRQ_TIMER 0
#define IRQ_KBD 1
#define IRQ_COM1 4
#define IRQ_SPURIOUS_PIC 7
#define T_APIC_SPURIOUS 0xFF

#ifndef __ASSEMBLER__

/* What trapasm.S saves on the kernel stack when an interrupt or
 * exception arrives: PUSHAL, the data segment registers, the vector and
 * error code (0 when the CPU pushes none), then what the CPU pushed. */
struct trapframe {
	uint32_t edi, esi, ebp, esp_at_pushal, ebx, edx, ecx, eax;
	uint32_t gs, fs, es, ds;
	uint32_t vector, error_code;
	uint32_t eip, cs, eflags;
	uint32_t esp, ss; /* pushed only when coming from ring 3 */
};

/* The registers swtch() saves: the ones the C calling convention says a
 * function must preserve, and where to return. EAX, ECX and EDX need no
 * saving: the caller of swtch() already expects them clobbered. */
struct context {
	uint32_t edi, esi, ebx, ebp, eip;
};

enum proc_state { UNUSED, RUNNABLE, RUNNING, SLEEPING, ZOMBIE };

struct proc {
	enum proc_state state;
	int pid;
	char name[16];
	struct proc *parent;
	uint32_t *pgdir;          /* its address space; kernel_pgdir for threads */
	uint8_t *kstack;          /* the bottom of its kernel stack */
	struct context *context;  /* where swtch() left it */
	struct trapframe *tf;     /* its user registers, at the top of kstack */
	uint32_t heap_start, brk; /* the heap is [heap_start, brk) */
	const void *chan;         /* what it sleeps on, when SLEEPING */
	int exit_status;
};

/* ---- main.c ---- */
extern int use_apic;
NORETURN void poweroff(uint8_t status);

/* ---- printf.c ---- */
void kprintf(const char *fmt, ...);
int snprintf(char *buf, int size, const char *fmt, ...);
NORETURN void panic(const char *fmt, ...);

/* ---- string.c ---- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
void strlcpy(char *dst, const char *src, size_t size);

/* ---- console.c ---- */
void console_putc(char c);
void console_write(const char *s, int n);
void console_init(void);
void console_intr(void);
void kbd_intr(void);
int console_read(char *buf, int n);

/* ---- desc.c ---- */
void desc_init(void);
void tss_set_kernel_stack(uint32_t esp0);

/* ---- trap.c ---- */
extern volatile uint32_t ticks;
void trap(struct trapframe *tf);

/* ---- pic.c ---- */
void pic_init(void);
void pic_unmask(int irq);
void pic_mask_all(void);
void pic_eoi(int irq);
void pit_start_periodic(uint32_t hz);
void pit_stop(void);

/* ---- apic.c ---- */
int mp_scan(void);
extern uint32_t lapic_phys, ioapic_phys;
void apic_init(void);
void ioapic_route(int irq, int vector);
void ioapic_mask(int irq);
void lapic_eoi(void);
void lapic_timer_start(uint32_t hz);

/* ---- kalloc.c ---- */
void kalloc_init(uint32_t start, uint32_t end);
void *kalloc(void);
void kfree(void *page);
uint32_t kalloc_free_pages(void);

/* ---- vm.c ---- */
extern uint32_t *kernel_pgdir;
void vm_init(uint32_t phys_top);
uint32_t *uvm_create(void);
int uvm_map(uint32_t *pgdir, uint32_t va, uint32_t pa, uint32_t flags);
uint32_t uvm_lookup(uint32_t *pgdir, uint32_t va);
void uvm_unmap(uint32_t *pgdir, uint32_t from, uint32_t to);
void uvm_free(uint32_t *pgdir);
int vm_fault(struct proc *p, uint32_t va);
int user_range_ok(struct proc *p, uint32_t va, uint32_t n, int write);

/* ---- elf.c ---- */
int elf_load(uint32_t *pgdir, const uint8_t *image, uint32_t size,
	     uint32_t *entry, uint32_t *end);

/* ---- proc.c ---- */
extern struct proc *current;
NORETURN void scheduler(void);
struct proc *spawn_user(const char *name, const uint8_t *image, uint32_t size);
struct proc *spawn_kernel_thread(const char *name, void (*fn)(void));
void yield(void);
void sleep_on(const void *chan);
void wakeup(const void *chan);
NORETURN void proc_exit(int status);
int proc_wait(int pid, int *status);
int proc_reap_any(int *pid, int *status);
void proc_list(void);

/* ---- syscall.c ---- */
void syscall(struct trapframe *tf);

/* ---- programs.S / shell.c ---- */
struct program {
	const char *name;
	const uint8_t *image;
	uint32_t size;
};
const struct program *program_find(const char *name);
extern const struct program programs[];
extern const int program_count;
void shell(void);

/* ---- trapasm.S ---- */
extern const uint32_t trap_vectors[256];
void trapret(void);
void kthread_start(void);
void swtch(struct context **save, struct context *load);

#endif /* __ASSEMBLER__ */
#endif /* KERNEL_H */
