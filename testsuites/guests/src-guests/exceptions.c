/*
 * exceptions: raise every exception we can on purpose and check what its
 * handler is given: the vector, the error code, and the saved CS:EIP.
 *
 * The saved EIP is what tells faults from traps (SDM Vol. 3A 6.5): a
 * fault saves the address of the faulting instruction, so that returning
 * from the handler restarts it; a trap saves the address of the next
 * instruction, because the trapping one has completed. Each check below
 * records the address that matters with a `movl $1f, ...` just before
 * the instruction, so the comparison needs no disassembly.
 *
 * The emulated CPU has no coprocessor. The x87 probe at the end expects
 * that, and is skipped on a CPU whose CPUID reports an FPU (QEMU's).
 */
#include "guest.h"

static volatile uint32_t at;     /* an instruction address, set by the asm */
static volatile uint32_t watched __attribute__((aligned(4)));
static uint32_t bounds[2] = { 0, 10 };
static volatile uint16_t fpu_status;
static volatile uint32_t user_esp;

#define SEL_NOT_PRESENT_DATA SELECTOR(6, 0)
#define SEL_NOT_PRESENT_STACK SELECTOR(7, 0)
#define SEL_SHORT_TSS SELECTOR(8, 0)
#define SEL_LIMITED_STACK SELECTOR(9, 0)
#define SEL_PAST_GDT SELECTOR(GDT_ENTRIES + 5, 0)
#define VECTOR_NOT_PRESENT 0x41
#define UNMAPPED_PAGE 0x003FF000u
#define ALIGNMENT_CHECKED 0x00000006u

static struct tss short_tss;

static int cpu_has_fpu(void)
{
	uint32_t a, b, c, d;

	cpuid(1, &a, &b, &c, &d);
	return d & 1;
}

static void divide_errors(void)
{
	const struct trap_record *t;

	test("#DE: DIV by zero is a fault");
	t = TRY(asm volatile("movl $1f, %0\n1: divl %1" : "=m"(at) : "r"(0), "a"(1), "d"(0)));
	expect_trap(t, T_DE, 0);
	expect_eq("saved EIP (the DIV)", at, t->eip);
	expect_eq("saved CS", SEL_KCODE, t->cs);

	test("#DE: DIV quotient overflow (EDX:EAX = 2^32, divisor 1)");
	t = TRY(asm volatile("movl $1f, %0\n1: divl %1" : "=m"(at) : "r"(1), "a"(0), "d"(1)));
	expect_trap(t, T_DE, 0);
	expect_eq("saved EIP (the DIV)", at, t->eip);

	test("#DE: IDIV -2^31 / -1 overflows");
	t = TRY(asm volatile("movl $1f, %0\n1: idivl %1"
			     : "=m"(at) : "r"(-1), "a"(0x80000000), "d"(0xFFFFFFFF)));
	expect_trap(t, T_DE, 0);
	expect_eq("saved EIP (the IDIV)", at, t->eip);
}

/* Resumes after an instruction breakpoint: RF=1 in the EFLAGS image makes
 * the IRET'd-to instruction ignore its breakpoint once (SDM Vol. 3A
 * 17.3.1.1), otherwise the handler would be re-entered forever. */
static int breakpoint_hits;
static uint32_t breakpoint_eip, breakpoint_dr6;

static void resume_with_rf(struct trapframe *tf)
{
	breakpoint_hits++;
	breakpoint_eip = tf->eip;
	breakpoint_dr6 = read_dr6();
	tf->eflags |= EFLAGS_RF;
}

static void debug_exceptions(void)
{
	const struct trap_record *t;
	uint32_t count;

	/* SDM Vol. 3A 17.3.1.4: TF set by POPF first takes effect on the
	 * instruction after POPF; the trap comes after that instruction
	 * completes. */
	test("#DB: single-step (TF) traps after the next instruction, DR6.BS");
	write_dr6(0);
	t = TRY(asm volatile("movl $1f, %0\n"
			     "pushfl\n orl $0x100, (%%esp)\n popfl\n"
			     "nop\n"
			     "1: nop" : "=m"(at)));
	expect_trap(t, T_DB, 0);
	expect_eq("saved EIP (after the first instruction run with TF=1)", at, t->eip);
	expect_eq("DR6.BS", 0x4000, t->dr6 & 0x4000);
	expect_eq("DR6.B0-B3", 0, t->dr6 & 0xF);

	/* An instruction breakpoint is a fault: it fires before the
	 * instruction runs (SDM Vol. 3A 17.3.1.1). */
	test("#DB: DR0 execution breakpoint faults before the instruction, RF resumes");
	set_trap_handler(T_DB, resume_with_rf);
	write_dr6(0);
	breakpoint_hits = 0;
	asm volatile("movl $1f, %%eax\n"
		     "movl %%eax, %1\n"
		     "movl %%eax, %%dr0\n"
		     "movl $0x101, %%eax\n"  /* L0, LE; RW0 = LEN0 = 0: execution */
		     "movl %%eax, %%dr7\n"
		     "xorl %0, %0\n"
		     "1: incl %0\n"
		     "incl %0\n"
		     : "=&r"(count), "=m"(at) : : "eax");
	write_dr7(0);
	write_dr0(0);
	set_trap_handler(T_DB, NULL);
	expect_eq("handler invocations", 1, breakpoint_hits);
	expect_eq("saved EIP (the breakpointed instruction)", at, breakpoint_eip);
	expect_eq("DR6.B0", 1, breakpoint_dr6 & 0xF);
	expect_eq("instructions completed after resuming", 2, count);

	/* A data breakpoint is a trap: the write has happened and the saved
	 * EIP is the next instruction (SDM Vol. 3A 17.3.1.2). RW1 = 01 breaks
	 * on writes only, so the read before it must not fire. */
	test("#DB: DR1 data write breakpoint traps after the write, DR6.B1");
	write_dr6(0);
	watched = 0;
	write_dr1((uint32_t)&watched);
	write_dr7((1 << 2) | 0x100 | (1 << 20) | (3 << 22)); /* L1, LE, RW1=01, LEN1=11 */
	t = TRY(asm volatile("movl %1, %%eax\n"
			     "movl $1f, %0\n"
			     "movl $0x1234, %1\n"
			     "1: nop" : "=m"(at), "+m"(watched) : : "eax"));
	write_dr7(0);
	write_dr1(0);
	expect_trap(t, T_DB, 0);
	expect_eq("saved EIP (after the write)", at, t->eip);
	expect_eq("DR6.B0-B3", 2, t->dr6 & 0xF);
	expect_eq("the write completed", 0x1234, watched);
}

static void software_traps(void)
{
	const struct trap_record *t;

	test("#BP: INT3 is a trap (EIP after it)");
	t = TRY(asm volatile("movl $1f, %0\n int3\n1:" : "=m"(at)));
	expect_trap(t, T_BP, 0);
	expect_eq("saved EIP", at, t->eip);

	test("#OF: INTO with OF=1 traps; with OF=0 does nothing");
	t = TRY(asm volatile("movl $0x7fffffff, %%eax\n"
			     "addl $1, %%eax\n"        /* sets OF */
			     "movl $1f, %0\n"
			     "into\n"
			     "1:" : "=m"(at) : : "eax", "cc"));
	expect_trap(t, T_OF, 0);
	expect_eq("saved EIP", at, t->eip);
	t = TRY(asm volatile("xorl %%eax, %%eax\n into" : : : "eax", "cc"));
	expect_no_trap(t);

	test("#BR: BOUND out of range is a fault; the upper bound is inclusive");
	t = TRY(asm volatile("movl $1f, %0\n1: boundl %1, %2" : "=m"(at) : "r"(11), "m"(bounds)));
	expect_trap(t, T_BR, 0);
	expect_eq("saved EIP (the BOUND)", at, t->eip);
	t = TRY(asm volatile("boundl %0, %1" : : "r"(10), "m"(bounds)));
	expect_no_trap(t);
}

static void invalid_opcodes(void)
{
	const struct trap_record *t;

	test("#UD: UD2");
	t = TRY(asm volatile("movl $1f, %0\n1: ud2" : "=m"(at)));
	expect_trap(t, T_UD, 0);
	expect_eq("saved EIP", at, t->eip);

	/* SDM Vol. 2A LOCK: #UD if the instruction is not one of the
	 * lockable read-modify-write forms with a memory destination. */
	test("#UD: LOCK NOP (F0 90)");
	t = TRY(asm volatile("movl $1f, %0\n1: .byte 0xf0, 0x90" : "=m"(at)));
	expect_trap(t, T_UD, 0);
	expect_eq("saved EIP (the prefix)", at, t->eip);

	test("#UD: LOCK ADD with a register destination (F0 01 C3)");
	t = TRY(asm volatile("movl $1f, %0\n1: .byte 0xf0, 0x01, 0xc3" : "=m"(at) : : "ebx", "cc"));
	expect_trap(t, T_UD, 0);
	expect_eq("saved EIP (the prefix)", at, t->eip);
}

/* SDM Vol. 3A 9.2 table 9-2: what CR0.EM, MP and TS do to x87 (ESC)
 * instructions and to WAIT. */
static void device_not_available(void)
{
	const struct trap_record *t;
	uint32_t cr0 = read_cr0();

	test("#NM: FNINIT with CR0.TS=1");
	write_cr0((cr0 & ~CR0_EM) | CR0_TS);
	t = TRY(asm volatile("movl $1f, %0\n1: fninit" : "=m"(at)));
	write_cr0(cr0);
	expect_trap(t, T_NM, 0);
	expect_eq("saved EIP (the FNINIT)", at, t->eip);

	test("#NM: FNINIT with CR0.EM=1");
	write_cr0((cr0 & ~CR0_TS) | CR0_EM);
	t = TRY(asm volatile("movl $1f, %0\n1: fninit" : "=m"(at)));
	write_cr0(cr0);
	expect_trap(t, T_NM, 0);
	expect_eq("saved EIP (the FNINIT)", at, t->eip);

	test("#NM: WAIT faults only when CR0.MP=1 and TS=1");
	write_cr0((cr0 & ~CR0_EM) | CR0_MP | CR0_TS);
	t = TRY(asm volatile("movl $1f, %0\n1: wait" : "=m"(at)));
	write_cr0(cr0);
	expect_trap(t, T_NM, 0);
	expect_eq("saved EIP (the WAIT)", at, t->eip);
	write_cr0((cr0 & ~(CR0_EM | CR0_MP)) | CR0_TS);
	t = TRY(asm volatile("wait"));
	write_cr0(cr0);
	expect_no_trap(t);
}

static void no_coprocessor(void)
{
	const struct trap_record *t;
	uint32_t cr0 = read_cr0();

	/* The classic probe: with no coprocessor, FNINIT does nothing and
	 * FNSTSW stores nothing, so the 0x5A5A we planted survives; a real
	 * FPU stores a status word of 0 after FNINIT. */
	test("no coprocessor: FNINIT; FNSTSW m16 stores nothing (EM=0, TS=0)");
	if (!cpu_has_fpu()) {
		write_cr0(cr0 & ~(CR0_EM | CR0_TS));
		fpu_status = 0x5A5A;
		t = TRY(asm volatile("fninit\n fnstsw %0" : "+m"(fpu_status)));
		write_cr0(cr0);
		expect_no_trap(t);
		expect_eq("status word in memory", 0x5A5A, fpu_status);
	} else {
		skip("CPU has an FPU");
	}

	test("with an FPU: FNSTSW after FNINIT stores 0");
	if (cpu_has_fpu()) {
		write_cr0(cr0 & ~(CR0_EM | CR0_TS));
		fpu_status = 0x5A5A;
		t = TRY(asm volatile("fninit\n fnstsw %0" : "+m"(fpu_status)));
		write_cr0(cr0);
		expect_no_trap(t);
		expect_eq("status word in memory", 0, fpu_status);
	} else {
		skip("CPU has no FPU");
	}
}

static void segment_faults(void)
{
	const struct trap_record *t;

	gdt_set(SEL_NOT_PRESENT_DATA >> 3,
		segment_descriptor(0, 0xFFFFF, ACC_DPL(0) | ACC_DATA_RW, FLAG_G | FLAG_DB));
	gdt_set(SEL_NOT_PRESENT_STACK >> 3,
		segment_descriptor(0, 0xFFFFF, ACC_DPL(0) | ACC_DATA_RW, FLAG_G | FLAG_DB));
	gdt_set(SEL_SHORT_TSS >> 3,
		segment_descriptor((uint32_t)&short_tss, 0x20, ACC_P | ACC_TSS32, 0));
	/* Limit 0x3FF in 4-KiB units: 4 MiB, which covers our stack. */
	gdt_set(SEL_LIMITED_STACK >> 3,
		segment_descriptor(0, 0x3FF, ACC_P | ACC_DPL(0) | ACC_DATA_RW, FLAG_G | FLAG_DB));

	/* SDM Vol. 3A 7.3: a TSS descriptor's limit must be at least 0x67.
	 * The check comes before any state is saved, so the fault belongs to
	 * the old task and names the new TSS. */
	test("#TS: JMP to a TSS whose limit is below 0x67");
	t = TRY(asm volatile("movl $1f, %0\n1: ljmp %1, $0" : "=m"(at) : "i"(SEL_SHORT_TSS)));
	expect_trap(t, T_TS, SEL_SHORT_TSS);
	expect_eq("saved EIP (the JMP)", at, t->eip);

	test("#NP: loading ES with a not-present data segment");
	t = TRY(asm volatile("movl $1f, %0\n1: movw %w1, %%es" : "=m"(at) : "r"(SEL_NOT_PRESENT_DATA)));
	expect_trap(t, T_NP, SEL_NOT_PRESENT_DATA);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	/* Error code bit 1 (IDT) says the index is an IDT vector (SDM Vol.
	 * 3A 6.13); EXT is clear because INT n is software. */
	test("#NP: INT n through a not-present IDT gate, error code n*8+2");
	idt[VECTOR_NOT_PRESENT] &= ~((uint64_t)ACC_P << 40);
	t = TRY(asm volatile("movl $1f, %0\n1: int %1" : "=m"(at) : "i"(VECTOR_NOT_PRESENT)));
	idt_set_stub(VECTOR_NOT_PRESENT, ACC_INT_GATE32, 0);
	expect_trap(t, T_NP, VECTOR_NOT_PRESENT * 8 + 2);
	expect_eq("saved EIP (the INT)", at, t->eip);

	/* A not-present segment loaded into SS raises #SS, not #NP (SDM
	 * Vol. 2B MOV). */
	test("#SS: loading SS with a not-present segment");
	t = TRY(asm volatile("movl $1f, %0\n1: movw %w1, %%ss" : "=m"(at) : "r"(SEL_NOT_PRESENT_STACK)));
	expect_trap(t, T_SS, SEL_NOT_PRESENT_STACK);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	test("#SS(0): SS-relative access beyond the SS limit");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits")) {
		t = TRY(asm volatile("movw %%ss, %%cx\n"
				     "movw %w1, %%ss\n"
				     "movl $1f, %0\n"
				     "1: movl %%ss:0x00500000, %%eax\n"
				     "movw %%cx, %%ss"
				     : "=m"(at) : "r"(SEL_LIMITED_STACK) : "eax", "ecx"));
		expect_trap(t, T_SS, 0);
		expect_eq("saved EIP (the MOV)", at, t->eip);
	}

	test("#GP: loading ES with a selector beyond the GDT limit");
	t = TRY(asm volatile("movl $1f, %0\n1: movw %w1, %%es" : "=m"(at) : "r"(SEL_PAST_GDT)));
	expect_trap(t, T_GP, SEL_PAST_GDT);
	expect_eq("saved EIP (the MOV)", at, t->eip);
}

static void hlt_at_cpl3(void)
{
	asm volatile("movl %%esp, %0\n movl $1f, %1\n1: hlt" : "=m"(user_esp), "=m"(at));
}

static void misaligned_read_at_cpl3(void)
{
	asm volatile("pushfl\n orl %1, (%%esp)\n popfl\n"
		     "movl $1f, %0\n"
		     "1: movl (%2), %%eax\n"
		     : "=m"(at) : "i"(EFLAGS_AC), "r"(ALIGNMENT_CHECKED) : "eax", "cc");
}

static void faults_at_cpl3(void)
{
	const struct trap_record *t;

	/* From CPL 3 the handler runs on the stack named by TSS.SS0:ESP0 and
	 * finds the old SS:ESP pushed above CS:EIP (SDM Vol. 3A 6.12.1). */
	test("#GP(0): HLT at CPL 3; SS:ESP pushed on the TSS.ESP0 stack");
	t = run_user(hlt_at_cpl3, EFLAGS_FIXED);
	expect_trap(t, T_GP, 0);
	expect_eq("saved EIP (the HLT)", at, t->eip);
	expect_eq("saved CS", SEL_UCODE, t->cs);
	expect_eq("saved SS", SEL_UDATA, t->ss);
	expect_eq("saved ESP", user_esp, t->esp);
	expect_eq("address of the saved EIP", (uint32_t)intr_stack_top - 20, t->frame);

	/* SDM Vol. 3A 6.15 interrupt 17: alignment checking needs CR0.AM,
	 * EFLAGS.AC and CPL 3 together. */
	test("#AC(0): misaligned read at CPL 3 with CR0.AM and EFLAGS.AC");
	if (!skip_on_qemu("QEMU TCG does not implement alignment checking")) {
		uint32_t cr0 = read_cr0();

		write_cr0(cr0 | CR0_AM);
		t = run_user(misaligned_read_at_cpl3, EFLAGS_FIXED);
		write_cr0(cr0);
		expect_trap(t, T_AC, 0);
		expect_eq("saved EIP (the MOV)", at, t->eip);
		expect_eq("saved CS", SEL_UCODE, t->cs);
	}

	test("no #AC at CPL 3 when CR0.AM=0");
	t = run_user(misaligned_read_at_cpl3, EFLAGS_FIXED);
	expect_user_done(t);
}

static void page_faults(void)
{
	const struct trap_record *t;

	paging_identity_low(PTE_W | PTE_U);
	page_table_low[UNMAPPED_PAGE >> 12] = 0;
	paging_enable();

	/* SDM Vol. 3A 4.7: error code bit 0 = P (protection, not absence),
	 * bit 1 = W/R, bit 2 = U/S. CR2 holds the faulting linear address. */
	test("#PF: read of a not-present page, error code 0, CR2");
	t = TRY(asm volatile("movl $1f, %0\n1: movl %1, %%eax"
			     : "=m"(at) : "m"(*(uint32_t *)(UNMAPPED_PAGE + 0x10)) : "eax"));
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", UNMAPPED_PAGE + 0x10, t->cr2);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	test("#PF: write to a not-present page, error code 2");
	t = TRY(asm volatile("movl $1f, %0\n1: movl $1, %1"
			     : "=m"(at), "=m"(*(uint32_t *)(UNMAPPED_PAGE + 0x24))));
	expect_trap(t, T_PF, 2);
	expect_eq("CR2", UNMAPPED_PAGE + 0x24, t->cr2);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	paging_disable();
}

/* SDM Vol. 3A 6.15, table 6-5: a contributory exception (#GP) whose
 * delivery raises another contributory one (#NP, for the missing gate)
 * becomes a double fault. #DF pushes an error code of 0; its saved
 * CS:EIP are undefined, so we do not look at them. */
static void double_fault(void)
{
	const struct trap_record *t;

	test("#DF(0): #NP while delivering #GP (its gate is not present)");
	idt[T_GP] &= ~((uint64_t)ACC_P << 40);
	t = TRY(asm volatile("movw %w0, %%es" : : "r"(SEL_PAST_GDT)));
	idt_set_stub(T_GP, ACC_INT_GATE32, 0);
	expect_trap(t, T_DF, 0);

	/* A benign exception followed by a contributory one is handled
	 * serially: INT3's missing gate gives a plain #NP. */
	test("no #DF: INT3 with a not-present gate raises #NP(3*8+2)");
	idt[T_BP] &= ~((uint64_t)ACC_P << 40);
	t = TRY(asm volatile("movl $1f, %0\n1: int3" : "=m"(at)));
	idt_set_stub(T_BP, ACC_INT_GATE32, 0);
	expect_trap(t, T_NP, T_BP * 8 + 2);
	expect_eq("saved EIP (the INT3)", at, t->eip);
}

int guest_main(void)
{
	tests_begin("exceptions");
	divide_errors();
	debug_exceptions();
	software_traps();
	invalid_opcodes();
	device_not_available();
	no_coprocessor();
	segment_faults();
	faults_at_cpl3();
	page_faults();
	double_fault();
	tests_done();
}
