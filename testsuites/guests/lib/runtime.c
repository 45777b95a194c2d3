/*
 * runtime.c: descriptor tables, exception dispatch and the test protocol.
 *
 * crt0.S has loaded `gdt` and flat segments; runtime_start builds the IDT
 * and the TSS, then calls the guest.
 */
#include "guest.h"

#define SEG_FLAT(access) \
	((0xFULL << 48) | 0xFFFFULL | ((uint64_t)(access) << 40) | \
	 ((uint64_t)(FLAG_G | FLAG_DB) << 52))

uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(8))) = {
	0,
	SEG_FLAT(ACC_P | ACC_DPL(0) | ACC_CODE_XR),
	SEG_FLAT(ACC_P | ACC_DPL(0) | ACC_DATA_RW),
	SEG_FLAT(ACC_P | ACC_DPL(3) | ACC_CODE_XR),
	SEG_FLAT(ACC_P | ACC_DPL(3) | ACC_DATA_RW),
	/* SEL_TSS: filled in by runtime_start, it needs &main_tss */
};
uint64_t idt[256] __attribute__((aligned(8)));
struct tss_with_iomap main_tss __attribute__((aligned(128)));
struct trap_record last_trap;
uint32_t multiboot_magic;
uint32_t multiboot_info;

extern const uint32_t trap_vector_table[256];
extern uint32_t trap_armed;
static trap_handler_fn trap_handlers[256];

uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint8_t access,
			    uint8_t flags)
{
	return (limit & 0xFFFFULL) | ((uint64_t)(base & 0xFFFFFF) << 16) |
	       ((uint64_t)access << 40) | ((uint64_t)(limit & 0xF0000) << 32) |
	       ((uint64_t)(flags & 0xF) << 52) |
	       ((uint64_t)(base & 0xFF000000) << 32);
}

uint64_t gate_descriptor(uint16_t selector, uint32_t offset, uint8_t access,
			 uint8_t param_count)
{
	return (offset & 0xFFFFULL) | ((uint64_t)selector << 16) |
	       ((uint64_t)(param_count & 0x1F) << 32) |
	       ((uint64_t)access << 40) |
	       ((uint64_t)(offset & 0xFFFF0000) << 32);
}

uint16_t gdt_set(int index, uint64_t desc)
{
	gdt[index] = desc;
	return SELECTOR(index, 0);
}

void idt_set(int vector, uint64_t desc)
{
	idt[vector] = desc;
}

void idt_set_stub(int vector, uint8_t type, int dpl)
{
	idt[vector] = gate_descriptor(SEL_KCODE, trap_vector_table[vector],
				      ACC_P | ACC_DPL(dpl) | type, 0);
}

void set_trap_handler(int vector, trap_handler_fn fn)
{
	trap_handlers[vector] = fn;
}

void runtime_start(uint32_t magic, uint32_t info)
{
	/* LIDT's operand: a 16-bit limit, then the 32-bit base. */
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint32_t)idt };

	multiboot_magic = magic;
	multiboot_info = info;

	for (int v = 0; v < 256; v++)
		idt_set_stub(v, ACC_INT_GATE32, 0);
	idt_set_stub(T_USER_DONE, ACC_INT_GATE32, 3);
	asm volatile("lidt %0" : : "m"(idtr));

	main_tss.tss.ss0 = SEL_KDATA;
	main_tss.tss.esp0 = (uint32_t)intr_stack_top;
	main_tss.tss.cr3 = read_cr3();
	main_tss.tss.iomap_base = sizeof(struct tss);
	memset(main_tss.iomap, 0xFF, sizeof(main_tss.iomap));
	gdt_set(SEL_TSS >> 3, segment_descriptor((uint32_t)&main_tss,
						 sizeof(main_tss) - 1,
						 ACC_P | ACC_TSS32, 0));
	load_tr(SEL_TSS);

	guest_exit((uint8_t)guest_main());
}

/* ---- exceptions ---- */

static int test_number;

/* The exit status of a failure: the failing test's number, or 127 when
 * no test had started. */
static uint8_t failure_status(void)
{
	return test_number ? (uint8_t)test_number : 127;
}

static void print_frame(const struct trapframe *tf)
{
	kprintf("    vector %u error code %#x at %04x:%08x eflags %08x",
		tf->vector, tf->error_code, tf->cs & 0xFFFF, tf->eip, tf->eflags);
	if (tf->vector == T_PF)
		kprintf(" cr2 %08x", read_cr2());
	kprintf("\n    eax %08x ebx %08x ecx %08x edx %08x\n"
		"    esi %08x edi %08x ebp %08x\n",
		tf->eax, tf->ebx, tf->ecx, tf->edx, tf->esi, tf->edi, tf->ebp);
}

void clear_last_trap(void)
{
	memset(&last_trap, 0, sizeof(last_trap));
	last_trap.vector = NO_TRAP;
}

void record_trap(const struct trapframe *tf)
{
	int outer = (tf->eflags & EFLAGS_VM) || (tf->cs & 3) != 0;

	last_trap.vector = tf->vector;
	last_trap.error_code = tf->error_code;
	last_trap.eip = tf->eip;
	last_trap.cs = tf->cs & 0xFFFF;
	last_trap.eflags = tf->eflags;
	last_trap.esp = outer ? tf->esp : 0;
	last_trap.ss = outer ? tf->ss & 0xFFFF : 0;
	last_trap.frame = (uint32_t)&tf->eip;
	last_trap.cr2 = tf->vector == T_PF ? read_cr2() : 0;
	last_trap.dr6 = tf->vector == T_DB ? read_dr6() : 0;
	last_trap.eax = tf->eax;
	last_trap.ecx = tf->ecx;
	last_trap.edx = tf->edx;
	last_trap.ebx = tf->ebx;
	last_trap.esi = tf->esi;
	last_trap.edi = tf->edi;
	last_trap.ebp = tf->ebp;
	last_trap.ds = tf->ds & 0xFFFF;
	last_trap.es = tf->es & 0xFFFF;
	last_trap.fs = tf->fs & 0xFFFF;
	last_trap.gs = tf->gs & 0xFFFF;
	if (tf->eflags & EFLAGS_VM) {
		last_trap.v86_es = tf->v86_es & 0xFFFF;
		last_trap.v86_ds = tf->v86_ds & 0xFFFF;
		last_trap.v86_fs = tf->v86_fs & 0xFFFF;
		last_trap.v86_gs = tf->v86_gs & 0xFFFF;
	}
}

void trap_dispatch(struct trapframe *tf)
{
	if (trap_handlers[tf->vector]) {
		trap_handlers[tf->vector](tf);
		return;
	}
	record_trap(tf);
	if (trap_armed)
		trap_unwind();
	kprintf("FAIL\n    unexpected exception\n");
	print_frame(tf);
	guest_exit(failure_status());
}

const struct trap_record *run_user(void (*fn)(void), uint32_t eflags)
{
	return TRY(user_enter(eflags, fn));
}

/* QEMU's TCG sets the hypervisor bit (CPUID.1:ECX[31]) and answers
 * hypervisor leaf 0x40000000 with the signature "TCGTCGTCGTCG". Under
 * KVM the checks run on real hardware and need no skipping. */
int on_qemu_tcg(void)
{
	uint32_t a, b, c, d;

	cpuid(1, &a, &b, &c, &d);
	if (!(c & (1u << 31)))
		return 0;
	cpuid(0x40000000, &a, &b, &c, &d);
	return b == 0x54474354 && c == 0x43544743 && d == 0x47435447;
}

/* ---- the test protocol ---- */

static const char *guest_name;
static int tests_skipped;
static enum { IDLE, RUNNING, SKIPPED } test_state;

static void finish_test(void)
{
	if (test_state == RUNNING)
		kprintf("ok\n");
	test_state = IDLE;
}

void tests_begin(const char *guest)
{
	guest_name = guest;
	kprintf("%s: start\n", guest);
}

void test(const char *name)
{
	finish_test();
	test_number++;
	test_state = RUNNING;
	kprintf("%3d %s ... ", test_number, name);
}

void expect_eq(const char *what, uint32_t expected, uint32_t observed)
{
	if (expected == observed)
		return;
	kprintf("FAIL\n    %s: expected %#x, observed %#x\n", what, expected,
		observed);
	kprintf("%s: test %d failed\n", guest_name, test_number);
	guest_exit(failure_status());
}

static const char *const vector_names[] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#9",
	"#TS", "#NP", "#SS", "#GP", "#PF", "#15", "#MF", "#AC",
};

static const char *vector_name(int v)
{
	if (v == NO_TRAP)
		return "no exception";
	if (v >= 0 && v < (int)ARRAY_SIZE(vector_names))
		return vector_names[v];
	return "an interrupt";
}

void expect_trap(const struct trap_record *t, int vector, uint32_t error_code)
{
	if (t->vector != vector) {
		kprintf("FAIL\n    expected %s (vector %d), observed %s (vector %d)",
			vector_name(vector), vector, vector_name(t->vector),
			t->vector);
		if (t->vector != NO_TRAP)
			kprintf(" error code %#x at %04x:%08x", t->error_code,
				t->cs, t->eip);
		kprintf("\n%s: test %d failed\n", guest_name, test_number);
		guest_exit(failure_status());
	}
	if (vector != NO_TRAP)
		expect_eq("error code", error_code, t->error_code);
}

void expect_no_trap(const struct trap_record *t)
{
	expect_trap(t, NO_TRAP, 0);
}

void expect_user_done(const struct trap_record *t)
{
	expect_trap(t, T_USER_DONE, 0);
}

int skip(const char *why)
{
	kprintf("skipped: %s\n", why);
	test_state = SKIPPED;
	tests_skipped++;
	return 1;
}

int skip_on_qemu(const char *why)
{
	return on_qemu_tcg() ? skip(why) : 0;
}

NORETURN void tests_done(void)
{
	finish_test();
	kprintf("%s: %d passed, %d skipped, 0 failed\n", guest_name,
		test_number - tests_skipped, tests_skipped);
	guest_exit(0);
}
