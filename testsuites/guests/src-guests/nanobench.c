/*
 * nanobench: the nanobenchmarks of Adams and Agesen, "A Comparison of
 * Software and Hardware Techniques for x86 Virtualization" (ASPLOS
 * 2006), section 6.2: one loop per operation a virtual machine monitor
 * finds expensive, each timed with RDTSC.
 *
 *   syscall-int80     INT 0x80 from CPL 3 to a handler that IRETs
 *   syscall-sysenter  SYSENTER from CPL 3 to an entry that SYSEXITs
 *   in                IN AL from port 0x21 (the master 8259A's mask), CPL 0
 *   tpr               a write to the local APIC's TPR (MMIO 0xFEE00080,
 *                     the 32-bit counterpart of CR8), CPL 0
 *   call-ret          a near CALL to a RET
 *   pagefault         a read of a not-present page: #PF, whose handler
 *                     skips the read (the page stays not present, so
 *                     every iteration faults exactly once)
 *   divzero           DIV by zero: #DE, whose handler skips the DIV
 *   ptemod            flip R/W in a PTE of the live page table, INVLPG
 *   cli-sti           CLI; STI with the 8259As masked and no timer
 *   pushf-popf        PUSHFD; POPFD at CPL 0
 *
 * Each prints `nanobench: OP ops=N insns=I`, I being the difference of
 * the RDTSC readings around its loop (nanobench.S says what the loop
 * holds besides the operation). ringside's TSC counts retired
 * instructions, so there I is the guest instructions the loop took,
 * the same on every run and engine; on a real CPU or under KVM (or
 * QEMU without -icount) RDTSC counts cycles, and I is cycles. Each
 * handler counts its invocations; a count other than N fails the run
 * (exit 1). Then `nanobench: done` and exit 0.
 *
 * The Multiboot command line selects the work: `iters=N` (default
 * 10000), `ops=NAME[,NAME...]` (default all; they run in the order
 * of the list above whatever order they are named in) and `paging=off`.
 * Other words, such as the kernel's file name QEMU puts first, are
 * ignored; a bad value exits 2.
 *
 * Paging is on throughout (the runtime's 0-4 MiB identity map, user
 * accessible, plus the local APIC's page, cache disabled), as a raw-mode
 * monitor expects of the guests it runs, unless the command line says
 * `paging=off`: then the operations that need no page tables (all but
 * pagefault and ptemod) run unpaged, for a host whose KVM runs only
 * unpaged protected mode.
 */
#include "guest.h"
#include "nanobench.h"

extern uint64_t loop_in(uint32_t n);
extern uint64_t loop_tpr(uint32_t n, uint32_t apic);
extern uint64_t loop_call_ret(uint32_t n);
extern uint64_t loop_pagefault(uint32_t n, uint32_t absent);
extern uint64_t loop_divzero(uint32_t n);
extern uint64_t loop_ptemod(uint32_t n, uint32_t *pte, uint32_t linear);
extern uint64_t loop_cli_sti(uint32_t n);
extern uint64_t loop_pushf_popf(uint32_t n);
extern void user_loop_int80(void), user_loop_sysenter(void);
extern void nanobench_int80_entry(void), nanobench_sysenter_entry(void);
extern void nanobench_pf_entry(void), nanobench_de_entry(void);
extern volatile uint32_t nanobench_handled, nanobench_user_iters;
extern volatile uint32_t nanobench_user_tsc[4];

#define DEFAULT_ITERS 10000
#define MULTIBOOT_INFO_CMDLINE (1u << 2)
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define CPUID_1_EDX_APIC (1u << 9)
#define CPUID_1_EDX_SEP (1u << 11)
#define PTE_PWT 0x008
#define PTE_PCD 0x010

/* The page every `pagefault` read touches, never mapped, and the page
 * whose PTE `ptemod` rewrites (nothing reads or writes it). */
static uint8_t absent_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t modified_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
/* Maps 0xFEC00000-0xFEFFFFFF; only the local APIC's entry is present. */
static uint32_t apic_page_table[1024] __attribute__((aligned(PAGE_SIZE)));

static NORETURN void fail(const char *op, const char *what, uint32_t expected,
			  uint32_t observed)
{
	kprintf("nanobench: %s FAILED: %s: expected %u, observed %u\n", op, what,
		expected, observed);
	guest_exit(1);
}

static uint32_t *pte_of(const void *linear)
{
	return &page_table_low[(uint32_t)linear / PAGE_SIZE];
}

/* ---- the operations ---- */

static uint64_t user_tsc_elapsed(void)
{
	uint64_t start = nanobench_user_tsc[0] | (uint64_t)nanobench_user_tsc[1] << 32;
	uint64_t end = nanobench_user_tsc[2] | (uint64_t)nanobench_user_tsc[3] << 32;
	return end - start;
}

/* Runs a CPL-3 loop, which ends with INT VEC_USER_BENCH_DONE. */
static uint64_t run_user_loop(const char *op, void (*loop)(void), uint32_t n)
{
	const struct trap_record *t;

	nanobench_user_iters = n;
	t = run_user(loop, EFLAGS_FIXED);
	if (t->vector != VEC_USER_BENCH_DONE)
		fail(op, "vector ending the CPL-3 loop", VEC_USER_BENCH_DONE,
		     (uint32_t)t->vector);
	return user_tsc_elapsed();
}

static uint64_t bench_int80(uint32_t n)
{
	uint64_t ticks;

	idt_set(0x80, gate_descriptor(SEL_KCODE, (uint32_t)nanobench_int80_entry,
				      ACC_P | ACC_DPL(3) | ACC_INT_GATE32, 0));
	ticks = run_user_loop("syscall-int80", user_loop_int80, n);
	idt_set_stub(T_USER_DONE, ACC_INT_GATE32, 3);
	return ticks;
}

static uint64_t bench_sysenter(uint32_t n)
{
	wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
	wrmsr(MSR_SYSENTER_ESP, (uint32_t)intr_stack_top);
	wrmsr(MSR_SYSENTER_EIP, (uint32_t)nanobench_sysenter_entry);
	return run_user_loop("syscall-sysenter", user_loop_sysenter, n);
}

static uint64_t bench_in(uint32_t n)
{
	return loop_in(n);
}

static uint64_t bench_tpr(uint32_t n)
{
	return loop_tpr(n, LAPIC_BASE);
}

static uint64_t bench_call_ret(uint32_t n)
{
	return loop_call_ret(n);
}

static uint64_t bench_pagefault(uint32_t n)
{
	uint64_t ticks;

	idt_set(T_PF, gate_descriptor(SEL_KCODE, (uint32_t)nanobench_pf_entry,
				      ACC_P | ACC_DPL(0) | ACC_INT_GATE32, 0));
	ticks = loop_pagefault(n, (uint32_t)absent_page);
	idt_set_stub(T_PF, ACC_INT_GATE32, 0);
	return ticks;
}

static uint64_t bench_divzero(uint32_t n)
{
	uint64_t ticks;

	idt_set(T_DE, gate_descriptor(SEL_KCODE, (uint32_t)nanobench_de_entry,
				      ACC_P | ACC_DPL(0) | ACC_INT_GATE32, 0));
	ticks = loop_divzero(n);
	idt_set_stub(T_DE, ACC_INT_GATE32, 0);
	return ticks;
}

static uint64_t bench_ptemod(uint32_t n)
{
	uint32_t *pte = pte_of(modified_page);
	uint32_t before = *pte;
	uint64_t ticks = loop_ptemod(n, pte, (uint32_t)modified_page);
	uint32_t flips = (n & 1) ? PTE_W : 0;

	if ((*pte ^ before) != flips)
		fail("ptemod", "R/W flips left in the PTE", flips, *pte ^ before);
	*pte = before;
	invlpg((uint32_t)modified_page);
	return ticks;
}

static uint64_t bench_cli_sti(uint32_t n)
{
	return loop_cli_sti(n);
}

static uint64_t bench_pushf_popf(uint32_t n)
{
	return loop_pushf_popf(n);
}

struct operation {
	const char *name;
	uint64_t (*run)(uint32_t n);
	/* Whether each iteration enters a handler that counts itself in
	 * nanobench_handled. */
	int counted;
};

static const struct operation operations[] = {
	{ "syscall-int80", bench_int80, 1 },
	{ "syscall-sysenter", bench_sysenter, 1 },
	{ "in", bench_in, 0 },
	{ "tpr", bench_tpr, 0 },
	{ "call-ret", bench_call_ret, 0 },
	{ "pagefault", bench_pagefault, 1 },
	{ "divzero", bench_divzero, 1 },
	{ "ptemod", bench_ptemod, 0 },
	{ "cli-sti", bench_cli_sti, 0 },
	{ "pushf-popf", bench_pushf_popf, 0 },
};

/* ---- the command line ---- */

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static int is_separator(char c)
{
	return c == ' ' || c == '\t' || c == 0;
}

/* The operation named by the `len` characters at `s`, or -1. */
static int find_operation(const char *s, int len)
{
	for (int i = 0; i < (int)ARRAY_SIZE(operations); i++) {
		const char *name = operations[i].name;
		int j = 0;

		while (j < len && name[j] == s[j])
			j++;
		if (j == len && name[j] == 0)
			return i;
	}
	return -1;
}

static NORETURN void bad_cmdline(const char *word)
{
	kprintf("nanobench: bad command line word: ");
	while (!is_separator(*word))
		serial_putc(*word++);
	kprintf("\n");
	guest_exit(2);
}

/* Reads `iters=`, `ops=` and `paging=` into *iters, *selected (a bit
 * per entry of operations[]) and *paging. */
static void parse_cmdline(const char *s, uint32_t *iters, uint32_t *selected, int *paging)
{
	while (*s) {
		const char *word = s;

		if (starts_with(s, "paging=")) {
			s += 7;
			if (starts_with(s, "off") && is_separator(s[3]))
				*paging = 0;
			else if (starts_with(s, "on") && is_separator(s[2]))
				*paging = 1;
			else
				bad_cmdline(word);
			while (!is_separator(*s))
				s++;
		} else if (starts_with(s, "iters=")) {
			uint64_t n = 0;

			s += 6;
			if (is_separator(*s))
				bad_cmdline(word);
			for (; !is_separator(*s); s++) {
				if (*s < '0' || *s > '9')
					bad_cmdline(word);
				n = n * 10 + (uint32_t)(*s - '0');
				if (n > 0xFFFFFFFFu)
					bad_cmdline(word);
			}
			if (n == 0)
				bad_cmdline(word);
			*iters = (uint32_t)n;
		} else if (starts_with(s, "ops=")) {
			*selected = 0;
			s += 4;
			for (;;) {
				const char *name = s;
				int op;

				while (!is_separator(*s) && *s != ',')
					s++;
				op = find_operation(name, (int)(s - name));
				if (op < 0)
					bad_cmdline(word);
				*selected |= 1u << op;
				if (*s != ',')
					break;
				s++;
			}
		} else {
			while (!is_separator(*s))
				s++;
		}
		while (*s == ' ' || *s == '\t')
			s++;
	}
}

/* ---- the machine ---- */

static void require_cpu_features(void)
{
	uint32_t a, b, c, d;

	cpuid(1, &a, &b, &c, &d);
	if (!(d & CPUID_1_EDX_APIC))
		fail("tpr", "CPUID.1:EDX.APIC", 1, 0);
	if (!(d & CPUID_1_EDX_SEP))
		fail("syscall-sysenter", "CPUID.1:EDX.SEP", 1, 0);
}

/* The 0-4 MiB identity map, user accessible (the CPL-3 loops run in the
 * image), minus absent_page, plus the local APIC's page with caching
 * disabled (PCD and PWT: SDM Vol. 3A 11.4.1 asks for strong uncacheable
 * APIC registers). */
static void map_memory(void)
{
	paging_identity_low(PTE_W | PTE_U);
	*pte_of(absent_page) = 0;
	page_dir[LAPIC_BASE >> 22] = (uint32_t)apic_page_table | PTE_P | PTE_W;
	apic_page_table[(LAPIC_BASE >> 12) & 0x3FF] =
		LAPIC_BASE | PTE_P | PTE_W | PTE_PCD | PTE_PWT;
	paging_enable();
}

int guest_main(void)
{
	const uint32_t *info = (const uint32_t *)multiboot_info;
	uint32_t iters = DEFAULT_ITERS;
	uint32_t selected = (1u << ARRAY_SIZE(operations)) - 1;
	int paging = 1;

	if (info[0] & MULTIBOOT_INFO_CMDLINE)
		parse_cmdline((const char *)info[4], &iters, &selected, &paging);
	if (!paging && (selected & ((1u << find_operation("pagefault", 9)) |
				    (1u << find_operation("ptemod", 6))))) {
		kprintf("nanobench: pagefault and ptemod need paging: name the others with ops=\n");
		guest_exit(2);
	}
	require_cpu_features();

	/* Mask every 8259 line: `cli-sti` opens the interrupt window, and
	 * the BIOS under QEMU leaves IRQ 0 unmasked with the 8254 running. */
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
	idt_set_stub(VEC_USER_BENCH_DONE, ACC_INT_GATE32, 3);
	if (paging)
		map_memory();

	for (int i = 0; i < (int)ARRAY_SIZE(operations); i++) {
		const struct operation *op = &operations[i];
		uint64_t ticks;

		if (!(selected & (1u << i)))
			continue;
		nanobench_handled = 0;
		ticks = op->run(iters);
		if (op->counted && nanobench_handled != iters)
			fail(op->name, "handler invocations", iters, nanobench_handled);
		kprintf("nanobench: %s ops=%u insns=%llu\n", op->name, iters, ticks);
	}
	kprintf("nanobench: done\n");
	return 0;
}
