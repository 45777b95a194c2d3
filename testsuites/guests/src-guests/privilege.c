/*
 * privilege: moving between CPL 3 and CPL 0, and the checks that guard
 * each way (SDM Vol. 3A chapter 5).
 *
 * Going in (a call gate, an interrupt or trap gate, SYSENTER) the CPU
 * switches to a stack the kernel chose: TSS.SS0:ESP0 for gates, the
 * SYSENTER MSRs for SYSENTER, and pushes the caller's SS:ESP there so it
 * can go back. A call gate also copies its parameters from the old
 * stack to the new one (SDM Vol. 3A 5.8.5). Going out (RET, IRET,
 * SYSEXIT) the CPU reloads the outer stack, and clears any data segment
 * register the outer ring should not be able to use (SDM Vol. 2A IRET,
 * RET: "FOR each SegReg in (ES, FS, GS, and DS)").
 *
 * The ring-3 and ring-0 halves of each transition are in privilege.S;
 * this file sets up the descriptors and checks what they recorded.
 */
#include "guest.h"
#include "privilege.h"

extern void user_call_gate(void), call_gate_entry(void), user_int_gates(void);
extern void iret_with_kernel_segments(void), user_sysenter(void), sysenter_entry(void);
extern void user_load_kernel_ds(void), user_load_ds_rpl0(void);
extern void user_call_dpl0_gate(void), user_int_dpl0_gate(void), user_cli(void);
extern void user_in_allowed(void), user_in_denied(void), user_popf(void);
extern void user_lret_to_ring0(void), user_iret_to_ring0(void), user_call_conforming(void);
extern const uint8_t gate_return[], int_return[], sysexit_return[];

extern uint32_t gate_user_esp, gate_user_esp_after, gate_cs_after, gate_es_after;
extern uint32_t gate_entry_esp, gate_frame[6], gate_entry_cs, gate_entry_ss;
extern uint32_t int_user_esp, seen_ds, seen_es, seen_fs, seen_gs;
extern uint32_t sysenter_user_esp, sysexit_cs, sysexit_ss, sysexit_esp;
extern uint32_t sysenter_cs, sysenter_ss, sysenter_esp, sysenter_eflags;
extern uint32_t flags_after_popf, conforming_cs;

#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176

static uint8_t alt_stack[4096] __attribute__((aligned(16)));
static uint8_t sysenter_stack[4096] __attribute__((aligned(16)));

/* What the handlers of the two DPL-3 gates saw, and their own EFLAGS. */
static struct trap_record gate_seen[2];
static uint32_t gate_handler_eflags[2];

static void record_and_return(struct trapframe *tf)
{
	int i = tf->vector - VEC_INT_GATE3;

	record_trap(tf);
	gate_seen[i] = last_trap;
	gate_handler_eflags[i] = read_eflags();
}

static void setup(void)
{
	gdt_set(GATE_DPL3_SEL >> 3, gate_descriptor(SEL_KCODE, (uint32_t)call_gate_entry,
						    ACC_P | ACC_DPL(3) | ACC_CALL_GATE32, GATE_PARAMS));
	gdt_set(GATE_DPL0_SEL >> 3, gate_descriptor(SEL_KCODE, (uint32_t)call_gate_entry,
						    ACC_P | ACC_DPL(0) | ACC_CALL_GATE32, GATE_PARAMS));
	gdt_set(CONFORMING_SEL >> 3, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_CODE_XR_CONF,
							FLAG_G | FLAG_DB));
	idt_set_stub(VEC_INT_GATE3, ACC_INT_GATE32, 3);
	idt_set_stub(VEC_TRAP_GATE3, ACC_TRAP_GATE32, 3);
	idt_set_stub(VEC_INT_GATE0, ACC_INT_GATE32, 0);
	set_trap_handler(VEC_INT_GATE3, record_and_return);
	set_trap_handler(VEC_TRAP_GATE3, record_and_return);
	main_tss.iomap[PORT_ALLOWED / 8] &= ~(1 << (PORT_ALLOWED % 8));
	/* Some tests run CPL 3 with EFLAGS.IF=1: mask every line of both
	 * 8259s so no hardware interrupt arrives. */
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
}

static void call_gates(void)
{
	const struct trap_record *t;

	/* SDM Vol. 3A 5.8.5, figure 5-13: the inner stack receives the old
	 * SS and ESP, the parameters (in the same order), then CS and EIP. */
	test("call gate CPL 3 -> 0: stack switch to TSS.ESP0, 2 parameters copied");
	gate_entry_cs = gate_entry_ss = 0xFFFF;
	t = run_user(user_call_gate, EFLAGS_FIXED);
	expect_user_done(t);
	expect_eq("CS in the gate target", SEL_KCODE, gate_entry_cs);
	expect_eq("SS in the gate target (TSS.SS0)", SEL_KDATA, gate_entry_ss);
	expect_eq("ESP in the gate target", (uint32_t)intr_stack_top - 24, gate_entry_esp);
	expect_eq("pushed EIP", (uint32_t)gate_return, gate_frame[0]);
	expect_eq("pushed CS", SEL_UCODE, gate_frame[1] & 0xFFFF);
	expect_eq("parameter at ESP+8 (pushed last)", PARAM_SECOND, gate_frame[2]);
	expect_eq("parameter at ESP+12 (pushed first)", PARAM_FIRST, gate_frame[3]);
	expect_eq("pushed ESP", gate_user_esp, gate_frame[4]);
	expect_eq("pushed SS", SEL_UDATA, gate_frame[5] & 0xFFFF);

	/* RET n to an outer level adds n to both stack pointers, and nulls
	 * ES, which held a DPL-0 selector (SDM Vol. 2A RET). */
	test("far RET 8 to CPL 3: back on the user stack, parameters released, ES nulled");
	expect_eq("CS after the return", SEL_UCODE, gate_cs_after & 0xFFFF);
	expect_eq("ESP after the return", gate_user_esp + 8, gate_user_esp_after);
	expect_eq("ES after the return", 0, gate_es_after & 0xFFFF);

	test("call gate with DPL 0 from CPL 3 raises #GP(gate selector)");
	t = run_user(user_call_dpl0_gate, EFLAGS_FIXED);
	expect_trap(t, T_GP, GATE_DPL0_SEL & ~3);

	test("far call to a conforming DPL 0 segment keeps CPL 3");
	conforming_cs = 0;
	t = run_user(user_call_conforming, EFLAGS_FIXED);
	expect_user_done(t);
	expect_eq("CS in the conforming segment", CONFORMING_SEL | 3, conforming_cs & 0xFFFF);
}

static void interrupt_gates(void)
{
	const struct trap_record *t;

	/* The stack comes from TSS.ESP0 as it is at the time of the
	 * interrupt: move it and look for the frame at the new place. */
	test("INT n from CPL 3: frame on the TSS.ESP0 stack with the old SS:ESP");
	main_tss.tss.esp0 = (uint32_t)alt_stack + sizeof(alt_stack);
	t = run_user(user_int_gates, EFLAGS_FIXED | EFLAGS_IF);
	main_tss.tss.esp0 = (uint32_t)intr_stack_top;
	expect_user_done(t);
	expect_eq("address of the saved EIP", (uint32_t)alt_stack + sizeof(alt_stack) - 20,
		  gate_seen[0].frame);
	expect_eq("saved EIP", (uint32_t)int_return, gate_seen[0].eip);
	expect_eq("saved CS", SEL_UCODE, gate_seen[0].cs);
	expect_eq("saved ESP", int_user_esp, gate_seen[0].esp);
	expect_eq("saved SS", SEL_UDATA, gate_seen[0].ss);
	expect_eq("saved EFLAGS.IF", EFLAGS_IF, gate_seen[0].eflags & EFLAGS_IF);

	/* SDM Vol. 3A 6.12.1.3: an interrupt gate clears IF, a trap gate
	 * leaves it. */
	test("interrupt gate clears IF in the handler, trap gate keeps it");
	expect_eq("IF in the interrupt-gate handler", 0, gate_handler_eflags[0] & EFLAGS_IF);
	expect_eq("IF in the trap-gate handler", EFLAGS_IF, gate_handler_eflags[1] & EFLAGS_IF);
	expect_eq("trap gate: saved EIP", (uint32_t)int_return + 2, gate_seen[1].eip);

	test("INT n through a DPL 0 gate from CPL 3 raises #GP(n*8+2)");
	t = run_user(user_int_dpl0_gate, EFLAGS_FIXED);
	expect_trap(t, T_GP, VEC_INT_GATE0 * 8 + 2);
}

static void iret_to_outer_ring(void)
{
	const struct trap_record *t;

	test("IRET to CPL 3 nulls DS/ES holding DPL 0 data, keeps DPL 3 data and conforming code");
	seen_ds = seen_es = seen_fs = seen_gs = 0xFFFF;
	t = TRY(iret_with_kernel_segments());
	expect_user_done(t);
	expect_eq("DS", 0, seen_ds & 0xFFFF);
	expect_eq("ES", 0, seen_es & 0xFFFF);
	expect_eq("FS", SEL_UDATA, seen_fs & 0xFFFF);
	expect_eq("GS", CONFORMING_SEL, seen_gs & 0xFFFF);
}

/* SDM Vol. 2B SYSENTER/SYSEXIT: CS and SS come from IA32_SYSENTER_CS
 * (+0, +8 going in; +16, +24 with RPL 3 coming out), ESP and EIP from the
 * MSRs going in and from ECX and EDX coming out. SYSENTER clears IF. */
static void sysenter_sysexit(void)
{
	uint32_t a, b, c, d;
	const struct trap_record *t;

	test("SYSENTER/SYSEXIT round trip");
	cpuid(1, &a, &b, &c, &d);
	if (!(d & (1 << 11))) {
		skip("CPUID reports no SYSENTER/SYSEXIT");
		return;
	}
	wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
	wrmsr(MSR_SYSENTER_ESP, (uint32_t)sysenter_stack + sizeof(sysenter_stack));
	wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);
	sysexit_cs = sysenter_cs = 0xFFFF;
	t = run_user(user_sysenter, EFLAGS_FIXED | EFLAGS_IF);
	expect_user_done(t);
	expect_eq("CS after SYSENTER", SEL_KCODE, sysenter_cs & 0xFFFF);
	expect_eq("SS after SYSENTER", SEL_KDATA, sysenter_ss & 0xFFFF);
	expect_eq("ESP after SYSENTER", (uint32_t)sysenter_stack + sizeof(sysenter_stack),
		  sysenter_esp);
	expect_eq("IF after SYSENTER", 0, sysenter_eflags & EFLAGS_IF);
	expect_eq("CS after SYSEXIT", SEL_UCODE, sysexit_cs & 0xFFFF);
	expect_eq("SS after SYSEXIT", SEL_UDATA, sysexit_ss & 0xFFFF);
	expect_eq("ESP after SYSEXIT (from ECX)", sysenter_user_esp, sysexit_esp);
}

static void protection_checks(void)
{
	const struct trap_record *t;

	test("CPL 3: loading DS with a DPL 0 segment raises #GP(selector)");
	expect_trap(run_user(user_load_kernel_ds, EFLAGS_FIXED), T_GP, SEL_KDATA);

	test("CPL 3: a DPL 3 segment with RPL 0 loads (max(CPL, RPL) <= DPL)");
	expect_user_done(run_user(user_load_ds_rpl0, EFLAGS_FIXED));

	test("CPL 3: CLI raises #GP(0) at IOPL 0, works at IOPL 3");
	expect_trap(run_user(user_cli, EFLAGS_FIXED), T_GP, 0);
	expect_user_done(run_user(user_cli, EFLAGS_FIXED | EFLAGS_IOPL(3)));

	/* SDM Vol. 1 19.5.2: at CPL > IOPL, I/O is allowed port by port by
	 * the TSS I/O permission bitmap. */
	test("CPL 3, IOPL 0: IN from a port the I/O bitmap allows works, a denied one #GP(0)");
	expect_user_done(run_user(user_in_allowed, EFLAGS_FIXED));
	expect_trap(run_user(user_in_denied, EFLAGS_FIXED), T_GP, 0);

	test("CPL 3, IOPL 3: the I/O bitmap is not consulted");
	expect_user_done(run_user(user_in_denied, EFLAGS_FIXED | EFLAGS_IOPL(3)));

	test("CPL 3: POPF leaves IF and IOPL unchanged, without a fault");
	flags_after_popf = 0xFFFFFFFF;
	expect_user_done(run_user(user_popf, EFLAGS_FIXED));
	expect_eq("IF and IOPL after POPF", 0,
		  flags_after_popf & (EFLAGS_IF | EFLAGS_IOPL_MASK));

	test("CPL 3: far RET to CPL 0 raises #GP(selector)");
	t = run_user(user_lret_to_ring0, EFLAGS_FIXED);
	expect_trap(t, T_GP, SEL_KCODE);

	test("CPL 3: IRET to CPL 0 raises #GP(selector)");
	t = run_user(user_iret_to_ring0, EFLAGS_FIXED);
	expect_trap(t, T_GP, SEL_KCODE);
}

int guest_main(void)
{
	tests_begin("privilege");
	setup();
	call_gates();
	interrupt_gates();
	iret_to_outer_ring();
	sysenter_sysexit();
	protection_checks();
	tests_done();
}
