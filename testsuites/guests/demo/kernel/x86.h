/*
 * x86.h: the instructions C cannot express, and the architectural
 * constants the kernel names.
 *
 * Each wrapper is one instruction. The "memory" clobbers tell the
 * compiler that the instruction has effects it cannot see (a new page
 * table, interrupts that may change memory), so it must not move loads
 * and stores across it.
 */
#ifndef X86_H
#define X86_H

/* EFLAGS (SDM Vol. 1 3.4.3). */
#define EFLAGS_FIXED 0x00000002 /* bit 1 always reads as 1 */
#define EFLAGS_IF 0x00000200

/* Control registers (SDM Vol. 3A 2.5). */
#define CR0_PG 0x80000000 /* paging */
#define CR0_WP 0x00010000 /* ring 0 honours read-only pages too */

#ifndef __ASSEMBLER__

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef int int32_t;
typedef unsigned int uintptr_t;
typedef unsigned int size_t;
#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NORETURN __attribute__((noreturn))

/* ---- port I/O (SDM Vol. 1 19) ---- */

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outb(uint16_t port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

/* ---- interrupts ---- */

static inline void cli(void)
{
	asm volatile("cli" : : : "memory");
}

static inline void sti(void)
{
	asm volatile("sti" : : : "memory");
}

/*
 * Waits for an interrupt with interrupts enabled. STI takes effect only
 * after the instruction that follows it (SDM Vol. 2B, STI: "interrupts
 * are recognized at the end of the next instruction"), so no interrupt
 * can slip in between the caller's last check and the HLT and leave us
 * asleep with its work undone.
 */
static inline void sti_hlt(void)
{
	asm volatile("sti; hlt" : : : "memory");
}

static inline uint32_t read_eflags(void)
{
	uint32_t v;
	asm volatile("pushfl; popl %0" : "=r"(v));
	return v;
}

/*
 * The kernel's only lock: with one CPU, code that runs with interrupts
 * disabled cannot be interrupted, so it owns every shared structure.
 * irq_save disables interrupts and returns the old EFLAGS; irq_restore
 * puts IF back as it was, so the pair nests (SDM Vol. 2B PUSHF, POPF:
 * at CPL 0 POPF may change IF).
 */
static inline uint32_t irq_save(void)
{
	uint32_t flags;
	asm volatile("pushfl; popl %0; cli" : "=r"(flags) : : "memory");
	return flags;
}

static inline void irq_restore(uint32_t flags)
{
	asm volatile("pushl %0; popfl" : : "r"(flags) : "memory", "cc");
}

/* ---- control registers and the TLB ---- */

static inline uint32_t read_cr0(void)
{
	uint32_t v;
	asm volatile("movl %%cr0, %0" : "=r"(v));
	return v;
}

static inline void write_cr0(uint32_t v)
{
	asm volatile("movl %0, %%cr0" : : "r"(v) : "memory");
}

static inline uint32_t read_cr2(void)
{
	uint32_t v;
	asm volatile("movl %%cr2, %0" : "=r"(v));
	return v;
}

/* Loading CR3 switches address spaces and flushes every TLB entry
 * (SDM Vol. 3A 4.10.4.1). */
static inline void write_cr3(uint32_t v)
{
	asm volatile("movl %0, %%cr3" : : "r"(v) : "memory");
}

/* Forgets the TLB's copy of one page's translation (SDM Vol. 3A 4.10.4.1). */
static inline void invlpg(uint32_t linear)
{
	asm volatile("invlpg (%0)" : : "r"(linear) : "memory");
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c,
			 uint32_t *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* ---- descriptor tables (SDM Vol. 3A 3.5.1, 6.10, 7.2.4) ---- */

/* The operand of LGDT and LIDT: a 16-bit limit, then the 32-bit base. */
struct pseudo_descriptor {
	uint16_t limit;
	uint32_t base;
} __attribute__((packed));

static inline void lidt(const void *base, uint16_t size)
{
	struct pseudo_descriptor d = { size - 1, (uint32_t)base };
	asm volatile("lidt %0" : : "m"(d));
}

static inline void ltr(uint16_t selector)
{
	asm volatile("ltr %0" : : "r"(selector) : "memory");
}

#endif /* __ASSEMBLER__ */
#endif /* X86_H */
