/*
 * tasks: hardware task switching (SDM Vol. 3A chapter 7).
 *
 * A task switch saves the running task's registers into its TSS (the one
 * TR selects), loads every register from the new task's TSS, and loads
 * TR. The busy bit in each TSS descriptor (type 0xB instead of 0x9) keeps
 * a task from being entered twice. JMP clears the old task's busy bit;
 * CALL, and an interrupt or exception through a task gate, leave it set,
 * write the old TSS selector into the new TSS's back link and set
 * EFLAGS.NT, so that IRET knows to switch back (SDM Vol. 3A 7.3, 7.4,
 * table 7-2).
 *
 * Task A is the runtime's main TSS. Tasks B, C and D run code from
 * tasks.S and record what they see; this file checks it.
 */
#include "guest.h"
#include "tasks.h"

extern void jmp_to_task_b(void), task_b_entry(void);
extern void call_task_gate(void), task_c_entry(void);
extern void gp_through_task_gate(void), task_d_entry(void);
extern void iret_to_available_task(void);
extern const uint8_t task_a_resume[];
extern uint32_t a_after[9], b_seen[6], c_seen[4], d_seen[4];
extern uint32_t d_expected_eip;

static struct tss tss_b, tss_c, tss_d, tss_short;
static uint8_t stack_b[4096], stack_c[4096], stack_d[4096];

#define TYPE_OF(sel) ((uint32_t)(gdt[(sel) >> 3] >> 40) & 0xF)
#define TYPE_IN(high_dword) (((high_dword) >> 8) & 0xF)

static void init_tss(struct tss *t, void (*entry)(void), uint8_t *stack, size_t size)
{
	memset(t, 0, sizeof(*t));
	t->eip = (uint32_t)entry;
	t->eflags = EFLAGS_FIXED;
	t->esp = (uint32_t)stack + size;
	t->cs = SEL_KCODE;
	t->ss = t->ds = t->es = t->fs = t->gs = SEL_KDATA;
	t->cr3 = read_cr3();
	t->iomap_base = sizeof(struct tss);
}

static void set_tss_descriptor(uint16_t sel, struct tss *t, uint32_t limit)
{
	gdt_set(sel >> 3, segment_descriptor((uint32_t)t, limit, ACC_P | ACC_TSS32, 0));
}

static void jmp_switch(void)
{
	init_tss(&tss_b, task_b_entry, stack_b, sizeof(stack_b));
	tss_b.eflags = EFLAGS_FIXED | EFLAGS_CF;
	tss_b.ebx = 0xB0000004;
	tss_b.esi = 0xB0000006;
	set_tss_descriptor(TSS_B_SEL, &tss_b, sizeof(tss_b) - 1);
	memset(b_seen, 0, sizeof(b_seen));

	test("JMP to a TSS: task B starts with the registers and EFLAGS in its TSS");
	jmp_to_task_b();
	expect_eq("TR in B", TSS_B_SEL, b_seen[0] & 0xFFFF);
	expect_eq("EFLAGS.CF in B (from TSS B)", EFLAGS_CF, b_seen[1] & EFLAGS_CF);
	expect_eq("EFLAGS.NT in B", 0, b_seen[1] & EFLAGS_NT);
	expect_eq("EBX in B", 0xB0000004, b_seen[2]);
	expect_eq("ESI in B", 0xB0000006, b_seen[3]);

	test("JMP: B busy, A no longer busy, no back link written");
	expect_eq("A's descriptor type in B", ACC_TSS32, TYPE_IN(b_seen[4]));
	expect_eq("B's descriptor type in B", ACC_TSS32_BUSY, TYPE_IN(b_seen[5]));
	expect_eq("B's back link", 0, tss_b.link);

	/* The outgoing task's state goes to its TSS (SDM Vol. 3A 7.3 step
	 * 8), and comes back from there when B jumps to A. */
	test("JMP: A's registers, FS and EIP were saved in A's TSS");
	expect_eq("saved EIP (after the JMP)", (uint32_t)task_a_resume, main_tss.tss.eip);
	expect_eq("saved EAX", 0xA0000001, main_tss.tss.eax);
	expect_eq("saved ECX", 0xA0000002, main_tss.tss.ecx);
	expect_eq("saved EDX", 0xA0000003, main_tss.tss.edx);
	expect_eq("saved EBX", 0xA0000004, main_tss.tss.ebx);
	expect_eq("saved EBP", 0xA0000005, main_tss.tss.ebp);
	expect_eq("saved ESI", 0xA0000006, main_tss.tss.esi);
	expect_eq("saved EDI", 0xA0000007, main_tss.tss.edi);
	expect_eq("saved FS", SEL_UDATA, main_tss.tss.fs);
	expect_eq("saved CS", SEL_KCODE, main_tss.tss.cs);

	test("JMP back to A: registers restored, A busy, B available");
	expect_eq("EAX", 0xA0000001, a_after[0]);
	expect_eq("ECX", 0xA0000002, a_after[1]);
	expect_eq("EDX", 0xA0000003, a_after[2]);
	expect_eq("EBX", 0xA0000004, a_after[3]);
	expect_eq("EBP", 0xA0000005, a_after[4]);
	expect_eq("ESI", 0xA0000006, a_after[5]);
	expect_eq("EDI", 0xA0000007, a_after[6]);
	expect_eq("FS", SEL_UDATA, a_after[8] & 0xFFFF);
	expect_eq("TR", SEL_TSS, read_tr());
	expect_eq("A's descriptor type", ACC_TSS32_BUSY, TYPE_OF(SEL_TSS));
	expect_eq("B's descriptor type", ACC_TSS32, TYPE_OF(TSS_B_SEL));

	/* A set CF with STC right before the JMP: an emulator that computes
	 * flags lazily must bring them up to date before saving EFLAGS. */
	test("JMP: EFLAGS.CF set just before the switch is saved and restored");
	if (!skip_on_qemu("QEMU 7.2 TCG saves stale lazily-computed flags in a task switch")) {
		expect_eq("saved EFLAGS.CF", EFLAGS_CF, main_tss.tss.eflags & EFLAGS_CF);
		expect_eq("EFLAGS.CF after the return", EFLAGS_CF, a_after[7] & EFLAGS_CF);
	}
}

static void call_and_iret(void)
{
	init_tss(&tss_c, task_c_entry, stack_c, sizeof(stack_c));
	set_tss_descriptor(TSS_C_SEL, &tss_c, sizeof(tss_c) - 1);
	gdt_set(TASK_GATE_C_SEL >> 3, gate_descriptor(TSS_C_SEL, 0, ACC_P | ACC_TASK_GATE, 0));
	memset(c_seen, 0, sizeof(c_seen));

	test("CALL through a task gate: NT set in C, back link = A, A and C busy");
	call_task_gate();
	expect_eq("TR in C", TSS_C_SEL, c_seen[0] & 0xFFFF);
	expect_eq("EFLAGS.NT in C", EFLAGS_NT, c_seen[1] & EFLAGS_NT);
	expect_eq("C's back link", SEL_TSS, tss_c.link);
	expect_eq("A's descriptor type in C", ACC_TSS32_BUSY, TYPE_IN(c_seen[2]));
	expect_eq("C's descriptor type in C", ACC_TSS32_BUSY, TYPE_IN(c_seen[3]));

	test("IRET with NT=1 returns to A: C available, A's NT clear");
	expect_eq("TR", SEL_TSS, read_tr());
	expect_eq("C's descriptor type", ACC_TSS32, TYPE_OF(TSS_C_SEL));
	expect_eq("A's descriptor type", ACC_TSS32_BUSY, TYPE_OF(SEL_TSS));
	expect_eq("EFLAGS.NT in A", 0, read_eflags() & EFLAGS_NT);
}

/* SDM Vol. 3A 6.12.2: an exception through a task gate pushes its error
 * code on the new task's stack. */
static void exception_through_task_gate(void)
{
	init_tss(&tss_d, task_d_entry, stack_d, sizeof(stack_d));
	set_tss_descriptor(TSS_D_SEL, &tss_d, sizeof(tss_d) - 1);
	memset(d_seen, 0, sizeof(d_seen));

	test("#GP through an IDT task gate: error code on D's stack, NT, back link");
	idt_set(T_GP, gate_descriptor(TSS_D_SEL, 0, ACC_P | ACC_TASK_GATE, 0));
	gp_through_task_gate();
	idt_set_stub(T_GP, ACC_INT_GATE32, 0);
	expect_eq("error code", SEL_PAST_GDT, d_seen[0]);
	expect_eq("TR in D", TSS_D_SEL, d_seen[1] & 0xFFFF);
	expect_eq("EFLAGS.NT in D", EFLAGS_NT, d_seen[2] & EFLAGS_NT);
	expect_eq("A's saved EIP (the faulting MOV)", d_expected_eip, d_seen[3]);
	expect_eq("D's back link", SEL_TSS, tss_d.link);
	expect_eq("TR after D's IRET", SEL_TSS, read_tr());
	expect_eq("D's descriptor type", ACC_TSS32, TYPE_OF(TSS_D_SEL));
}

static void invalid_switches(void)
{
	/* SDM Vol. 3A 7.3, table 7-1 and Vol. 2B IRET. */
	test("#TS: JMP to a TSS whose limit is below 0x67");
	set_tss_descriptor(TSS_SHORT_SEL, &tss_short, 0x20);
	expect_trap(TRY(asm volatile("ljmp %0, $0" : : "i"(TSS_SHORT_SEL))), T_TS, TSS_SHORT_SEL);
	expect_eq("TR", SEL_TSS, read_tr());

	test("#TS: IRET with NT=1 to a back link that is not busy");
	init_tss(&tss_b, task_b_entry, stack_b, sizeof(stack_b));
	set_tss_descriptor(TSS_B_SEL, &tss_b, sizeof(tss_b) - 1);
	expect_trap(TRY(iret_to_available_task()), T_TS, TSS_B_SEL);
	main_tss.tss.link = 0;
	expect_eq("TR", SEL_TSS, read_tr());

	test("#GP: JMP to a busy TSS (the running task's own)");
	expect_trap(TRY(asm volatile("ljmp %0, $0" : : "i"(SEL_TSS))), T_GP, SEL_TSS);
}

int guest_main(void)
{
	tests_begin("tasks");
	jmp_switch();
	call_and_iret();
	exception_through_task_gate();
	invalid_switches();
	tests_done();
}
