/*
 * vm86: virtual-8086 mode, 8086 code inside a protected-mode task (SDM
 * Vol. 3A chapter 20).
 *
 * With EFLAGS.VM=1 the CPU forms addresses the 8086 way (segment * 16 +
 * offset, 64-KiB limits) and runs at CPL 3. Anything that would let the
 * 8086 program take over the machine goes to a protected-mode monitor
 * instead: with IOPL < 3, CLI, STI, PUSHF, POPF, INT n and IRET raise
 * #GP(0) (SDM Vol. 3A 20.2.7), and IN/OUT are checked against the TSS
 * I/O permission bitmap whatever IOPL is (Vol. 2A IN: "(CPL > IOPL) or
 * (VM = 1)"). An interrupt or exception leaves VM86 for ring 0 through
 * the IDT, pushing the 8086 segment registers and loading null into DS,
 * ES, FS and GS (Vol. 3A 20.3.1.1, figure 20-2).
 *
 * Here the monitor is this file: it copies the 16-bit code of vm86.S
 * below 1 MiB, IRETs into it, and checks what comes back. PIC lines are
 * masked, since VM86 code at IOPL 3 may set IF.
 */
#include "guest.h"
#include "vm86.h"

/* The order IRET pops a VM86 frame in. */
struct v86_frame {
	uint32_t ip, cs, eflags, sp, ss, es, ds, fs, gs;
};

extern NORETURN void vm86_enter(const struct v86_frame *f);
extern const uint8_t v86_blob_start[], v86_blob_end[];
extern const uint8_t v86_segments[], v86_segments_int[], v86_flags[];
extern const uint8_t v86_cli[], v86_sti[], v86_pushf[], v86_popf[], v86_int[], v86_iret[];
extern const uint8_t v86_hlt[], v86_io[], v86_io_denied[], v86_emulated[], v86_dpl0_gate[];

#define V86_BASE (V86_CODE_SEG * 16)
#define V86_DATA(offset) (*(volatile uint16_t *)(V86_DATA_SEG * 16 + (offset)))

static struct v86_frame frame;

static uint32_t ip_of(const uint8_t *entry)
{
	return (uint32_t)(entry - v86_blob_start);
}

static const struct trap_record *run_v86(const uint8_t *entry, int iopl)
{
	frame.ip = ip_of(entry);
	frame.cs = V86_CODE_SEG;
	frame.eflags = EFLAGS_FIXED | EFLAGS_VM | EFLAGS_IOPL(iopl);
	frame.sp = V86_STACK_TOP;
	frame.ss = V86_CODE_SEG;
	frame.es = frame.ds = frame.fs = frame.gs = 0;
	return TRY(vm86_enter(&frame));
}

static void expect_v86_fault_at(const struct trap_record *t, const uint8_t *entry)
{
	expect_trap(t, T_GP, 0);
	expect_eq("EFLAGS.VM in the saved EFLAGS", EFLAGS_VM, t->eflags & EFLAGS_VM);
	expect_eq("saved CS", V86_CODE_SEG, t->cs);
	expect_eq("saved EIP", ip_of(entry), t->eip);
}

static void setup(void)
{
	memcpy((void *)V86_BASE, v86_blob_start, v86_blob_end - v86_blob_start);
	idt_set_stub(VEC_MONITOR, ACC_INT_GATE32, 3);
	main_tss.iomap[0x3F8 / 8] &= ~(1 << (0x3F8 % 8));
	main_tss.iomap[0x3FD / 8] &= ~(1 << (0x3FD % 8));
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
}

static void addressing(void)
{
	const struct trap_record *t;

	V86_DATA(0x10) = 0;
	V86_DATA(0x12) = 0;

	test("IRET with VM=1 enters VM86: DS:0x10 and (DS+1):0 are one linear address");
	t = run_v86(v86_segments, 3);
	expect_trap(t, VEC_MONITOR, 0);
	expect_eq("word written at 0x3000:0x10", 0x1234, V86_DATA(0x10));
	expect_eq("word copied through 0x3001:0 to 0x3001:2", 0x1234, V86_DATA(0x12));

	test("far CALL to 0x2001:IP-0x10 reaches the same code, CS = 0x2001");
	expect_eq("CS seen by the far-called code", V86_CODE_SEG + 1, t->edx & 0xFFFF);

	test("INT n at IOPL 3: ring-0 handler on TSS.ESP0 gets the VM86 frame");
	expect_eq("address of the saved EIP (9 dwords below ESP0)",
		  (uint32_t)intr_stack_top - 36, t->frame);
	expect_eq("saved EIP (after the INT)", ip_of(v86_segments_int) + 2, t->eip);
	expect_eq("saved CS", V86_CODE_SEG, t->cs);
	expect_eq("EFLAGS.VM in the saved EFLAGS", EFLAGS_VM, t->eflags & EFLAGS_VM);
	expect_eq("saved SS", V86_CODE_SEG, t->ss);
	expect_eq("saved ESP", V86_STACK_TOP, t->esp);
	expect_eq("saved ES", V86_DATA_SEG + 1, t->v86_es);
	expect_eq("saved DS", V86_DATA_SEG, t->v86_ds);
	expect_eq("saved FS", 0x4000, t->v86_fs);
	expect_eq("saved GS", 0x5000, t->v86_gs);

	test("INT n from VM86 loads null into DS, ES, FS and GS");
	expect_eq("DS in the handler", 0, t->ds);
	expect_eq("ES in the handler", 0, t->es);
	expect_eq("FS in the handler", 0, t->fs);
	expect_eq("GS in the handler", 0, t->gs);
}

static void flags_at_iopl3(void)
{
	const struct trap_record *t;

	test("IOPL 3: PUSHF shows IOPL 3, POPF cannot clear it, PUSHFD stores VM=0");
	t = run_v86(v86_flags, 3);
	expect_trap(t, VEC_MONITOR, 0);
	expect_eq("IOPL pushed by PUSHF", EFLAGS_IOPL(3), t->ebx & EFLAGS_IOPL_MASK);
	expect_eq("IOPL after POPF of IOPL 0", EFLAGS_IOPL(3), t->ecx & EFLAGS_IOPL_MASK);
	expect_eq("IOPL in the real EFLAGS", EFLAGS_IOPL(3), t->eflags & EFLAGS_IOPL_MASK);
	expect_eq("VM in the PUSHFD image", 0, t->edx & EFLAGS_VM);
}

static void iopl_sensitive(void)
{
	static const struct {
		const char *name;
		const uint8_t *entry;
	} sensitive[] = {
		{ "CLI", v86_cli }, { "STI", v86_sti }, { "PUSHF", v86_pushf },
		{ "POPF", v86_popf }, { "INT n", v86_int }, { "IRET", v86_iret },
	};

	test("IOPL 0: CLI, STI, PUSHF, POPF, INT n, IRET raise #GP(0) at themselves");
	for (unsigned i = 0; i < ARRAY_SIZE(sensitive); i++) {
		const struct trap_record *t = run_v86(sensitive[i].entry, 0);

		if (t->vector != T_GP || t->eip != ip_of(sensitive[i].entry))
			kprintf("(%s) ", sensitive[i].name);
		expect_v86_fault_at(t, sensitive[i].entry);
	}

	test("HLT raises #GP(0) even at IOPL 3 (VM86 runs at CPL 3)");
	expect_v86_fault_at(run_v86(v86_hlt, 3), v86_hlt);

	test("INT n through a DPL 0 gate at IOPL 3 raises #GP(n*8+2)");
	expect_trap(run_v86(v86_dpl0_gate, 3), T_GP, VEC_DPL0 * 8 + 2);
}

static void io_bitmap(void)
{
	test("I/O bitmap at IOPL 0: allowed ports work (prints), a denied one #GP(0)");
	expect_v86_fault_at(run_v86(v86_io, 0), v86_io_denied);

	test("I/O bitmap at IOPL 3: still consulted in VM86");
	expect_v86_fault_at(run_v86(v86_io, 3), v86_io_denied);
}

/* A monitor in miniature: emulate CLI (skip it and IRET back into VM86),
 * stop at anything else. */
static int emulated_cli;

static void monitor_gp(struct trapframe *tf)
{
	const uint8_t *ip = (const uint8_t *)((tf->cs & 0xFFFF) * 16 + (tf->eip & 0xFFFF));

	if ((tf->eflags & EFLAGS_VM) && *ip == 0xFA) {
		emulated_cli++;
		tf->eip++;
		return;
	}
	record_trap(tf);
	trap_unwind();
}

static void monitor(void)
{
	const struct trap_record *t;

	test("monitor emulates CLI and IRETs back into VM86 with DS intact");
	V86_DATA(0x20) = 0;
	emulated_cli = 0;
	set_trap_handler(T_GP, monitor_gp);
	t = run_v86(v86_emulated, 0);
	set_trap_handler(T_GP, NULL);
	expect_trap(t, T_GP, 0);
	expect_eq("CLIs emulated", 2, emulated_cli);
	expect_eq("SI set after the CLIs", 0x5A5A, t->esi & 0xFFFF);
	expect_eq("word stored through DS after the CLIs", 0x7777, V86_DATA(0x20));
}

int guest_main(void)
{
	tests_begin("vm86");
	setup();
	addressing();
	flags_at_iopl3();
	iopl_sensitive();
	io_bitmap();
	monitor();
	tests_done();
}
