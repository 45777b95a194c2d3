/*
 * main.c: from the loader's hand-off to the first process.
 *
 * kmain runs once, on the boot stack, with interrupts off. It reads what
 * the loader told us, builds the descriptor tables, finds out how much
 * memory there is and which interrupt hardware, turns paging on, starts
 * the timer and the console, creates the shell and becomes the
 * scheduler.
 */
#include "kernel.h"

#define MULTIBOOT_BOOT_MAGIC 0x2BADB002
#define TIMER_HZ 100

/* The Multiboot information structure (Multiboot 0.6.96, 3.3). A field
 * is valid only if its bit in `flags` is set. */
struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower, mem_upper; /* KiB below 640 KiB / from 1 MiB (bit 0) */
	uint32_t boot_device;
	uint32_t cmdline;              /* bit 2 */
	uint32_t mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr; /* bit 6 */
	uint32_t drives_length, drives_addr;
	uint32_t config_table;
	uint32_t boot_loader_name;     /* bit 9 */
};
#define MB_INFO_MEMORY 0x001
#define MB_INFO_CMDLINE 0x004
#define MB_INFO_MMAP 0x040
#define MB_INFO_LOADER_NAME 0x200

/* One memory map entry; `size` does not count itself. */
struct multiboot_mmap_entry {
	uint32_t size;
	uint64_t base, length;
	uint32_t type; /* 1: RAM we may use */
} __attribute__((packed));

extern uint8_t kernel_end[]; /* kernel.ld */

int use_apic;
static char cmdline[128];
static char loader_name[40];

/*
 * The end of the usable RAM that starts at 1 MiB: from the memory map
 * if there is one (the BIOS's E820 map, passed on), else from mem_upper.
 * Memory above PHYS_LIMIT is left unused.
 */
static uint32_t find_memory_top(const struct multiboot_info *mbi)
{
	uint64_t top = 0;

	if (mbi->flags & MB_INFO_MMAP) {
		uint32_t a = mbi->mmap_addr;

		while (a < mbi->mmap_addr + mbi->mmap_length) {
			const struct multiboot_mmap_entry *e = (const void *)a;

			if (e->type == 1 && e->base <= 0x100000 && e->base + e->length > 0x100000)
				top = e->base + e->length;
			a += e->size + 4;
		}
	}
	if (!top && (mbi->flags & MB_INFO_MEMORY))
		top = 0x100000 + (uint64_t)mbi->mem_upper * 1024;
	return top > PHYS_LIMIT ? PHYS_LIMIT : (uint32_t)PAGE_ROUND_DOWN(top);
}

/* Copies what we need out of the Multiboot information now: QEMU puts
 * it just past the kernel, in memory kalloc is about to hand out. */
static uint32_t read_boot_info(const struct multiboot_info *mbi)
{
	if (mbi->flags & MB_INFO_CMDLINE)
		strlcpy(cmdline, (const char *)mbi->cmdline, sizeof(cmdline));
	strlcpy(loader_name, mbi->flags & MB_INFO_LOADER_NAME ? (const char *)mbi->boot_loader_name : "an unnamed loader", sizeof(loader_name));
	kprintf("boot: loaded by %s", loader_name);
	if (mbi->flags & MB_INFO_MEMORY)
		kprintf("; %u KiB below 640 KiB, %u KiB from 1 MiB", mbi->mem_lower,
			mbi->mem_upper);
	kprintf("\n");
	return find_memory_top(mbi);
}

/* Is `word` one of the space-separated words of the command line? */
static int cmdline_has(const char *word)
{
	size_t n = strlen(word);

	for (const char *p = cmdline; *p; p++)
		if ((p == cmdline || p[-1] == ' ') && memcmp(p, word, n) == 0 &&
		    (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

/*
 * CPUID exists if software can flip EFLAGS.ID (bit 21) (SDM Vol. 1
 * 20.1). Leaf 0 returns the vendor string in EBX, EDX, ECX; leaf 1
 * the family/model/stepping in EAX and feature bits in EDX.
 */
static void cpu_identify(void)
{
	uint32_t before = read_eflags(), after, a, b, c, d;
	char vendor[13];

	asm volatile("pushl %1; popfl; pushfl; popl %0; pushl %2; popfl"
		     : "=r"(after) : "r"(before ^ (1u << 21)), "r"(before) : "cc");
	if (!((before ^ after) & (1u << 21))) {
		kprintf("cpu: no CPUID\n");
		return;
	}
	cpuid(0, &a, &b, &c, &d);
	memcpy(vendor, &b, 4);
	memcpy(vendor + 4, &d, 4);
	memcpy(vendor + 8, &c, 4);
	vendor[12] = '\0';
	cpuid(1, &a, &b, &c, &d);
	kprintf("cpu: %s family %u model %u stepping %u; fpu %s, apic %s\n", vendor,
		(a >> 8) & 0xF, (a >> 4) & 0xF, a & 0xF, d & 1 ? "yes" : "no",
		d & (1 << 9) ? "yes" : "no");
}

/* The debug-exit port of ringside and of QEMU's isa-debug-exit device
 * stops the emulator. On a real PC nothing listens there, so halt. */
NORETURN void poweroff(uint8_t status)
{
	outb(0xF4, status);
	for (;;)
		asm volatile("cli; hlt");
}

NORETURN void kmain(uint32_t magic, const struct multiboot_info *mbi)
{
	uint32_t memory_top;

	kprintf("\nringside demo OS\n");
	if (magic != MULTIBOOT_BOOT_MAGIC)
		panic("EAX was %p at entry, not the Multiboot magic", magic);
	memory_top = read_boot_info(mbi);
	if (memory_top < (uint32_t)kernel_end + 64 * PAGE_SIZE)
		panic("not enough memory (%u KiB)", memory_top / 1024);

	desc_init();
	cpu_identify();
	/* The MP tables live in the first MiB and in ROM, which are not
	 * mapped once paging is on: look before. */
	use_apic = !cmdline_has("nomp") && mp_scan();

	kalloc_init((uint32_t)kernel_end, memory_top);
	vm_init(memory_top);
	kprintf("memory: %u KiB, kernel image %u KiB at 1 MiB, %u pages free\n",
		memory_top / 1024, ((uint32_t)kernel_end - 0x100000) / 1024,
		kalloc_free_pages());

	if (use_apic) {
		apic_init();
		lapic_timer_start(TIMER_HZ);
		ioapic_route(IRQ_COM1, T_IRQ0 + IRQ_COM1);
		ioapic_route(IRQ_KBD, T_IRQ0 + IRQ_KBD);
		kprintf("timer: LAPIC timer at %u Hz, calibrated against the 8254\n", TIMER_HZ);
	} else {
		kprintf("interrupts: %s, using the 8259A PIC\n",
			cmdline_has("nomp") ? "'nomp' given" : "no MP table");
		pic_init();
		pit_start_periodic(TIMER_HZ);
		pic_unmask(IRQ_TIMER);
		pic_unmask(IRQ_COM1);
		pic_unmask(IRQ_KBD);
		kprintf("timer: 8254 PIT at %u Hz\n", TIMER_HZ);
	}
	console_init();
	kprintf("console: COM1 at 0x3f8, IRQ %u; screen and keyboard, IRQ %u\n", IRQ_COM1,
		IRQ_KBD);

	if (!spawn_kernel_thread("shell", shell))
		panic("cannot create the shell");
	scheduler();
}
