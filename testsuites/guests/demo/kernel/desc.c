/*
 * desc.c: the three tables protected mode runs on, GDT, IDT and TSS.
 *
 * The GDT holds flat code and data segments for ring 0 and ring 3, and
 * the TSS descriptor. The TSS here is not used for hardware task
 * switching (we switch in software, trapasm.S swtch); the CPU reads two
 * things from it: SS0:ESP0, the stack to switch to when an interrupt
 * arrives in ring 3, and the I/O permission bitmap.
 */
#include "kernel.h"

/* A segment descriptor (SDM Vol. 3A 3.4.5, figure 3-8): base 0, limit
 * 0xFFFFF in 4-KiB units (G=1) = 4 GiB, 32-bit (D/B=1), present, with
 * the given DPL and type. */
#define SEG_FLAT(dpl, type) \
	(0x00CF00000000FFFFull | ((uint64_t)(0x90 | (dpl) << 5 | (type)) << 40))
#define TYPE_CODE_XR 0xA /* execute/read */
#define TYPE_DATA_RW 0x2 /* read/write */
#define TYPE_TSS32 0x9   /* available 32-bit TSS (system segment: S=0) */
#define TYPE_INT_GATE 0xE  /* clears IF on entry */
#define TYPE_TRAP_GATE 0xF /* leaves IF alone */

/*
 * The I/O permission bitmap (SDM Vol. 1 19.5.2) lets ring 3 use some
 * ports while IOPL stays 0: an IN or OUT at CPL > IOPL is allowed only
 * if every bit for its ports is 0. Ports past the end of the TSS count
 * as 1s, so the bitmap only needs to reach the highest port we grant,
 * 0x80 (the POST code port), plus one byte of 1s: the CPU always reads
 * two bytes of the map. The `ports` program's OUTs to 0x80 therefore run
 * without entering the kernel, exactly as the hardware check allows;
 * any other port raises #GP and the process is killed.
 */
#define USER_PORT 0x80
#define IOMAP_BYTES (USER_PORT / 8 + 1)

/* The 32-bit TSS (SDM Vol. 3A 7.2.1, figure 7-2), then the bitmap. */
struct tss {
	uint16_t link, link_hi;
	uint32_t esp0;
	uint16_t ss0, ss0_hi;
	uint32_t esp1;
	uint16_t ss1, ss1_hi;
	uint32_t esp2;
	uint16_t ss2, ss2_hi;
	uint32_t cr3, eip, eflags;
	uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint16_t es, es_hi, cs, cs_hi, ss, ss_hi, ds, ds_hi, fs, fs_hi, gs,
		gs_hi, ldt, ldt_hi;
	uint16_t trap, iomap_base;
	uint8_t iomap[IOMAP_BYTES];
	uint8_t iomap_end; /* 0xFF */
} __attribute__((packed));

static struct tss tss __attribute__((aligned(128)));

static uint64_t gdt[6] __attribute__((aligned(8))) = {
	0,                               /* the null descriptor */
	SEG_FLAT(0, TYPE_CODE_XR),       /* SEL_KCODE */
	SEG_FLAT(0, TYPE_DATA_RW),       /* SEL_KDATA */
	SEG_FLAT(3, TYPE_CODE_XR),       /* SEL_UCODE */
	SEG_FLAT(3, TYPE_DATA_RW),       /* SEL_UDATA */
	0,                               /* SEL_TSS, filled in below */
};

static uint64_t idt[256] __attribute__((aligned(8)));

/* An IDT gate (SDM Vol. 3A 6.11, figure 6-2). */
static uint64_t gate(uint32_t offset, int type, int dpl)
{
	return (offset & 0xFFFF) | ((uint64_t)SEL_KCODE << 16) |
	       ((uint64_t)(0x80 | dpl << 5 | type) << 40) |
	       ((uint64_t)(offset >> 16) << 48);
}

static uint64_t system_segment(uint32_t base, uint32_t limit, int type)
{
	return (limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) |
	       ((uint64_t)(0x80 | type) << 40) |
	       ((uint64_t)((limit >> 16) & 0xF) << 48) |
	       ((uint64_t)(base >> 24) << 56);
}

static void load_gdt(void)
{
	struct pseudo_descriptor gdtr = { sizeof(gdt) - 1, (uint32_t)gdt };

	/* A far jump is the way to reload CS (SDM Vol. 3A 3.4.3); the data
	 * segment registers are reloaded one by one. */
	asm volatile("lgdt %0\n\t"
		     "ljmp %1, $1f\n"
		     "1:\tmovw %w2, %%ds\n\t"
		     "movw %w2, %%es\n\t"
		     "movw %w2, %%fs\n\t"
		     "movw %w2, %%gs\n\t"
		     "movw %w2, %%ss"
		     : : "m"(gdtr), "i"(SEL_KCODE), "r"(SEL_KDATA) : "memory");
}

void desc_init(void)
{
	load_gdt();

	/* Every vector gets an interrupt gate, so IF is clear in every
	 * handler and the handler cannot be interrupted halfway through.
	 * The system call gate is a trap gate with DPL 3: ring 3 may raise
	 * it, and system calls run with interrupts enabled, like the user
	 * code that made them. */
	for (int v = 0; v < 256; v++)
		idt[v] = gate(trap_vectors[v], TYPE_INT_GATE, 0);
	idt[T_SYSCALL] = gate(trap_vectors[T_SYSCALL], TYPE_TRAP_GATE, 3);
	lidt(idt, sizeof(idt));

	tss.ss0 = SEL_KDATA;
	tss.iomap_base = __builtin_offsetof(struct tss, iomap);
	memset(tss.iomap, 0xFF, sizeof(tss.iomap));
	tss.iomap[USER_PORT / 8] &= ~(1 << (USER_PORT % 8));
	tss.iomap_end = 0xFF;
	gdt[SEL_TSS >> 3] = system_segment((uint32_t)&tss, sizeof(tss) - 1, TYPE_TSS32);
	ltr(SEL_TSS);
}

/* Called by the scheduler for each process it runs: an interrupt in
 * ring 3 must land on that process's own kernel stack. */
void tss_set_kernel_stack(uint32_t esp0)
{
	tss.esp0 = esp0;
}
