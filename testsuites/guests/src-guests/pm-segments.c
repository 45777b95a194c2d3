/*
 * pm-segments: the protection checks of protected-mode segmentation.
 *
 * A segment register caches a descriptor's base, limit and type when it
 * is loaded (SDM Vol. 3A 3.4.3). Two kinds of check follow from that:
 * checks when loading the register (type, present, privilege; MOV to a
 * segment register in Vol. 2B lists them), and checks on every access
 * through it (limit and write permission, Vol. 3A 5.3 and 5.4). The
 * second kind is where emulators cut corners: QEMU's TCG does not do them
 * at all, so those checks are skipped under QEMU (README.md).
 *
 * The last part checks the instructions that ask about a selector without
 * loading it: LAR, LSL, VERR, VERW (they report through ZF instead of
 * faulting) and ARPL.
 */
#include "guest.h"

#define SEL_SMALL SELECTOR(6, 0)          /* RW data, base seg_buf, limit 0xFFF */
#define SEL_DOWN32 SELECTOR(7, 0)         /* expand-down, B=1 */
#define SEL_DOWN16 SELECTOR(8, 0)         /* expand-down, B=0 */
#define SEL_RO_DATA SELECTOR(9, 0)        /* read-only data, flat */
#define SEL_XO_CODE SELECTOR(10, 0)       /* execute-only code */
#define SEL_XR_CODE SELECTOR(11, 0)       /* execute/read code, flat */
#define SEL_NOT_PRESENT SELECTOR(12, 0)
#define SEL_DATA_DPL3 SELECTOR(13, 0)
#define SEL_STACK_4M SELECTOR(14, 0)      /* RW data, limit 4 MiB */
#define SEL_LDT SELECTOR(15, 0)
#define SEL_WINDOW SELECTOR(16, 0)        /* code, base cs_window_start */
#define SEL_CONFORMING SELECTOR(17, 0)    /* conforming readable code, DPL 0 */
#define SEL_CALL_GATE SELECTOR(18, 0)
#define SEL_INT_GATE SELECTOR(19, 0)      /* a gate type only the IDT may hold */
#define SEL_UNACCESSED SELECTOR(20, 0)
#define SEL_PAST_GDT SELECTOR(GDT_ENTRIES, 0)
#define SEL_LDT_DATA LDT_SELECTOR(1, 0)

static uint8_t seg_buf[8192] __attribute__((aligned(4096)));
static uint64_t ldt[2];

/* The code segment SEL_WINDOW covers cs_window_start up to, but not
 * including, cs_window_edge. Execution that runs into the edge must
 * fault; if it does not, the window jumps home. */
asm(".text\n"
    "cs_window_start:\n"
    "	nop\n"
    "	nop\n"
    "	nop\n"
    "cs_window_edge:\n"
    "	nop\n"
    "	ljmp $0x08, $cs_window_return\n");
extern const uint8_t cs_window_start[], cs_window_edge[];

/* Each helper loads a selector into one segment register, uses it, and
 * puts the old selector back, all in one asm statement: the C code
 * around it addresses memory through DS and SS. */
#define DEFINE_SEGMENT_ACCESS(seg)                                              \
	static uint32_t read_##seg(uint16_t sel, uint32_t offset)               \
	{                                                                       \
		uint32_t v;                                                     \
		asm volatile("pushl %%" #seg "\n"                               \
			     "movw %w1, %%" #seg "\n"                           \
			     "movl %%" #seg ":(%2), %0\n"                       \
			     "popl %%" #seg                                     \
			     : "=&r"(v) : "r"(sel), "r"(offset) : "memory");    \
		return v;                                                       \
	}                                                                       \
	static void write_##seg(uint16_t sel, uint32_t offset, uint32_t v)      \
	{                                                                       \
		asm volatile("pushl %%" #seg "\n"                               \
			     "movw %w0, %%" #seg "\n"                           \
			     "movl %2, %%" #seg ":(%1)\n"                       \
			     "popl %%" #seg                                     \
			     : : "r"(sel), "r"(offset), "r"(v) : "memory");     \
	}                                                                       \
	static void load_##seg(uint16_t sel)                                    \
	{                                                                       \
		asm volatile("pushl %%" #seg "\n"                               \
			     "movw %w0, %%" #seg "\n"                           \
			     "popl %%" #seg : : "r"(sel) : "memory");           \
	}
DEFINE_SEGMENT_ACCESS(ds)
DEFINE_SEGMENT_ACCESS(es)
DEFINE_SEGMENT_ACCESS(fs)
DEFINE_SEGMENT_ACCESS(gs)

/* SS is saved in a register rather than on the stack it is about to
 * replace; every SS used here has base 0, so ESP stays meaningful. */
static void load_ss(uint16_t sel)
{
	asm volatile("movw %%ss, %%cx\n"
		     "movw %w0, %%ss\n"
		     "movw %%cx, %%ss" : : "r"(sel) : "ecx", "memory");
}

static uint32_t read_ss(uint16_t sel, uint32_t offset)
{
	uint32_t v;

	asm volatile("movw %%ss, %%cx\n"
		     "movw %w1, %%ss\n"
		     "movl %%ss:(%2), %0\n"
		     "movw %%cx, %%ss"
		     : "=&r"(v) : "r"(sel), "r"(offset) : "ecx", "memory");
	return v;
}

static void setup_descriptors(void)
{
	uint32_t buf = (uint32_t)seg_buf;

	gdt_set(6, segment_descriptor(buf, 0xFFF, ACC_P | ACC_DATA_RW, FLAG_DB));
	/* Expand-down: valid offsets run from limit+1 up to 0xFFFFFFFF (B=1)
	 * or 0xFFFF (B=0) (SDM Vol. 3A 5.3). The bases are chosen so the
	 * lowest valid offset lands on seg_buf[0]. */
	gdt_set(7, segment_descriptor(buf - 0x10000, 0xFFFF, ACC_P | ACC_DATA_RW_DOWN, FLAG_DB));
	gdt_set(8, segment_descriptor(buf - 0xF000, 0xEFFF, ACC_P | ACC_DATA_RW_DOWN, 0));
	gdt_set(9, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_DATA_RO, FLAG_G | FLAG_DB));
	gdt_set(10, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_CODE_XO, FLAG_G | FLAG_DB));
	gdt_set(11, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_CODE_XR, FLAG_G | FLAG_DB));
	gdt_set(12, segment_descriptor(0, 0xFFFFF, ACC_DATA_RW, FLAG_G | FLAG_DB));
	gdt_set(13, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_DPL(3) | ACC_DATA_RW, FLAG_G | FLAG_DB));
	gdt_set(14, segment_descriptor(0, 0x3FF, ACC_P | ACC_DATA_RW, FLAG_G | FLAG_DB));
	ldt[1] = segment_descriptor(buf, 0xFFF, ACC_P | ACC_DATA_RW, FLAG_DB);
	gdt_set(15, segment_descriptor((uint32_t)ldt, sizeof(ldt) - 1, ACC_P | ACC_LDT, 0));
	gdt_set(16, segment_descriptor((uint32_t)cs_window_start,
				       cs_window_edge - cs_window_start - 1,
				       ACC_P | ACC_CODE_XR, FLAG_DB));
	gdt_set(17, segment_descriptor(0, 0xFFFFF, ACC_P | ACC_CODE_XR_CONF, FLAG_G | FLAG_DB));
	gdt_set(18, gate_descriptor(SEL_KCODE, 0, ACC_P | ACC_CALL_GATE32, 0));
	gdt_set(19, gate_descriptor(SEL_KCODE, 0, ACC_P | ACC_INT_GATE32, 0));
	gdt_set(20, segment_descriptor(buf, 0xFFF, ACC_P | ACC_DATA_RW, FLAG_DB));
	for (int i = 0; i < 16; i++)
		((uint32_t *)seg_buf)[i] = 0x5E600000 + i;
}

static void limit_checks(void)
{
	const struct trap_record *t;
	uint32_t v = 0;

	test("based segment: FS:0x10 reads seg_buf[0x10], FS:0xFFC is within the limit");
	t = TRY(v = read_fs(SEL_SMALL, 0x10));
	expect_no_trap(t);
	expect_eq("dword at FS:0x10", 0x5E600004, v);
	expect_no_trap(TRY(read_fs(SEL_SMALL, 0xFFC)));

	/* SDM Vol. 3A 5.3: every byte accessed must be within the limit. */
	test("DS/ES/FS/GS: access past the limit raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits")) {
		expect_trap(TRY(read_ds(SEL_SMALL, 0x1000)), T_GP, 0);
		expect_trap(TRY(read_es(SEL_SMALL, 0x1000)), T_GP, 0);
		expect_trap(TRY(read_fs(SEL_SMALL, 0x1000)), T_GP, 0);
		expect_trap(TRY(read_gs(SEL_SMALL, 0x1000)), T_GP, 0);
		expect_trap(TRY(write_ds(SEL_SMALL, 0x2000, 0)), T_GP, 0);
		expect_trap(TRY(write_gs(SEL_SMALL, 0xFFE, 0)), T_GP, 0);
	}

	test("a dword straddling the limit (offset 0xFFD) raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits"))
		expect_trap(TRY(read_fs(SEL_SMALL, 0xFFD)), T_GP, 0);

	/* Stack-segment limit violations are #SS, not #GP. */
	test("SS: access past the limit raises #SS(0)");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits"))
		expect_trap(TRY(read_ss(SEL_STACK_4M, 0x00500000)), T_SS, 0);

	test("expand-down, B=1: offset limit+1 is seg_buf[0]");
	t = TRY(v = read_es(SEL_DOWN32, 0x10000));
	expect_no_trap(t);
	expect_eq("dword at ES:0x10000", 0x5E600000, v);

	test("expand-down, B=1: offset at the limit raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits"))
		expect_trap(TRY(read_es(SEL_DOWN32, 0xFFFF)), T_GP, 0);

	test("expand-down, B=0: offsets 0xF000 and 0xFFFC are valid");
	t = TRY(v = read_gs(SEL_DOWN16, 0xF004));
	expect_no_trap(t);
	expect_eq("dword at GS:0xF004", 0x5E600001, v);
	expect_no_trap(TRY(read_gs(SEL_DOWN16, 0xFFFC)));

	test("expand-down, B=0: below limit+1, straddling or above 0xFFFF raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check data segment limits")) {
		expect_trap(TRY(read_gs(SEL_DOWN16, 0xEFFF)), T_GP, 0);
		expect_trap(TRY(read_gs(SEL_DOWN16, 0xFFFE)), T_GP, 0);
		expect_trap(TRY(read_gs(SEL_DOWN16, 0x10000)), T_GP, 0);
	}
}

static uint32_t cs_window_reached;

static void __attribute__((noinline)) run_cs_window(void)
{
	asm volatile("ljmp %1, $0\n"
		     "cs_window_return:\n"
		     "movl $1, %0" : "=m"(cs_window_reached) : "i"(SEL_WINDOW) : "memory");
}

static void code_limit_checks(void)
{
	const struct trap_record *t;

	test("far JMP to an offset past the CS limit raises #GP(0)");
	t = TRY(asm volatile("ljmp %0, $0x100" : : "i"(SEL_WINDOW)));
	expect_trap(t, T_GP, 0);
	expect_eq("saved CS (the JMP did not happen)", SEL_KCODE, t->cs);

	test("running into the CS limit raises #GP(0) at the first instruction past it");
	if (!skip_on_qemu("QEMU TCG does not check the CS limit on sequential fetch")) {
		t = TRY(run_cs_window());
		expect_trap(t, T_GP, 0);
		expect_eq("saved CS", SEL_WINDOW, t->cs);
		expect_eq("saved EIP", cs_window_edge - cs_window_start, t->eip);
	}
}

static void type_checks(void)
{
	const struct trap_record *t;
	uint32_t v = 0;

	/* SDM Vol. 2B MOV: a null selector may be loaded into DS, ES, FS, GS;
	 * the fault comes on use. SS may never hold a null selector at
	 * CPL 0-3 outside 64-bit mode. */
	test("null selector: loading DS/ES/FS/GS is allowed, also with RPL 3");
	expect_no_trap(TRY(load_ds(0)));
	expect_no_trap(TRY(load_es(0)));
	expect_no_trap(TRY(load_fs(3)));
	expect_no_trap(TRY(load_gs(0)));

	test("null selector: a read through DS or ES raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check accesses through a null selector")) {
		expect_trap(TRY(read_ds(0, 0x1000)), T_GP, 0);
		expect_trap(TRY(read_es(3, 0x1000)), T_GP, 0);
	}

	test("null selector: loading SS raises #GP(0)");
	expect_trap(TRY(load_ss(0)), T_GP, 0);

	test("execute-only code into DS raises #GP(selector)");
	expect_trap(TRY(load_ds(SEL_XO_CODE)), T_GP, SEL_XO_CODE);

	test("readable code into ES loads and reads");
	t = TRY(v = read_es(SEL_XR_CODE, (uint32_t)seg_buf + 8));
	expect_no_trap(t);
	expect_eq("dword through the code segment", 0x5E600002, v);

	test("write through readable code or read-only data raises #GP(0)");
	if (!skip_on_qemu("QEMU TCG does not check write permission on access")) {
		expect_trap(TRY(write_es(SEL_XR_CODE, (uint32_t)seg_buf, 1)), T_GP, 0);
		expect_trap(TRY(write_fs(SEL_RO_DATA, (uint32_t)seg_buf, 1)), T_GP, 0);
	}

	test("read-only data: reads work");
	t = TRY(v = read_fs(SEL_RO_DATA, (uint32_t)seg_buf + 4));
	expect_no_trap(t);
	expect_eq("dword through the read-only segment", 0x5E600001, v);

	test("not-present data segment into DS raises #NP(selector)");
	expect_trap(TRY(load_ds(SEL_NOT_PRESENT)), T_NP, SEL_NOT_PRESENT);

	test("not-present segment into SS raises #SS(selector)");
	expect_trap(TRY(load_ss(SEL_NOT_PRESENT)), T_SS, SEL_NOT_PRESENT);

	test("selector past the GDT limit raises #GP(selector)");
	expect_trap(TRY(load_gs(SEL_PAST_GDT)), T_GP, SEL_PAST_GDT);

	test("a system descriptor (the TSS) into DS raises #GP(selector)");
	expect_trap(TRY(load_ds(SEL_TSS)), T_GP, SEL_TSS);

	/* The selector's TI bit picks the LDT; with LDTR null every LDT
	 * selector is invalid. */
	test("LDT selector with a null LDTR raises #GP(selector)");
	load_ldt(0);
	expect_trap(TRY(load_fs(SEL_LDT_DATA)), T_GP, SEL_LDT_DATA & ~3);

	test("LDT: LLDT, then an LDT selector in FS reads seg_buf");
	load_ldt(SEL_LDT);
	t = TRY(v = read_fs(SEL_LDT_DATA, 12));
	load_ldt(0);
	expect_no_trap(t);
	expect_eq("dword at FS:12", 0x5E600003, v);

	test("loading a segment sets the accessed bit of its descriptor");
	expect_eq("accessed bit before", 0, (uint32_t)(gdt[20] >> 40) & ACC_ACCESSED);
	expect_no_trap(TRY(load_gs(SEL_UNACCESSED)));
	expect_eq("accessed bit after", 1, (uint32_t)(gdt[20] >> 40) & ACC_ACCESSED);
}

/* SDM Vol. 2B MOV: for SS the selector's RPL and the descriptor's DPL
 * must both equal CPL, and the segment must be writable data; for DS-GS
 * max(CPL, RPL) must not exceed DPL (for data and non-conforming code). */
static void privilege_checks(void)
{
	test("SS with RPL 3 at CPL 0 raises #GP(selector)");
	expect_trap(TRY(load_ss(SEL_KDATA | 3)), T_GP, SEL_KDATA);

	test("SS with a DPL 3 segment at CPL 0 raises #GP(selector)");
	expect_trap(TRY(load_ss(SEL_DATA_DPL3)), T_GP, SEL_DATA_DPL3);

	test("SS with read-only data or code raises #GP(selector)");
	expect_trap(TRY(load_ss(SEL_RO_DATA)), T_GP, SEL_RO_DATA);
	expect_trap(TRY(load_ss(SEL_XR_CODE)), T_GP, SEL_XR_CODE);

	test("DS: RPL 3 selector for a DPL 0 segment raises #GP(selector)");
	expect_trap(TRY(load_ds(SEL_KDATA | 3)), T_GP, SEL_KDATA);

	test("DS: a DPL 3 segment loads at CPL 0");
	expect_no_trap(TRY(load_ds(SEL_DATA_DPL3)));

	test("DS: conforming readable code with RPL 3 loads (no DPL check)");
	expect_no_trap(TRY(load_ds(SEL_CONFORMING | 3)));
}

static int lar(uint32_t sel, uint32_t *rights)
{
	uint8_t zf;

	asm volatile("larl %2, %0\n setz %1" : "+r"(*rights), "=q"(zf) : "r"(sel) : "cc");
	return zf;
}

static int lsl(uint32_t sel, uint32_t *limit)
{
	uint8_t zf;

	asm volatile("lsll %2, %0\n setz %1" : "+r"(*limit), "=q"(zf) : "r"(sel) : "cc");
	return zf;
}

static int verr(uint16_t sel)
{
	uint8_t zf;

	asm volatile("verr %w1\n setz %0" : "=q"(zf) : "r"(sel) : "cc");
	return zf;
}

static int verw(uint16_t sel)
{
	uint8_t zf;

	asm volatile("verw %w1\n setz %0" : "=q"(zf) : "r"(sel) : "cc");
	return zf;
}

/* LAR returns the second descriptor dword masked with 0x00FxFF00; bits
 * 19:16 are undefined, so we compare under 0x00F0FF00 (SDM Vol. 2A). */
#define LAR_MASK 0x00F0FF00
static uint32_t rights_of(uint16_t sel)
{
	return (uint32_t)(gdt[sel >> 3] >> 32) & LAR_MASK;
}

static void query_instructions(void)
{
	uint32_t v;

	test("LAR: data, code, TSS and call gate give ZF=1 and the access rights");
	uint16_t valid[] = { SEL_KDATA, SEL_SMALL, SEL_XO_CODE, SEL_TSS, SEL_CALL_GATE };
	for (unsigned i = 0; i < ARRAY_SIZE(valid); i++) {
		v = 0;
		expect_eq("ZF", 1, lar(valid[i], &v));
		expect_eq("access rights", rights_of(valid[i]), v & LAR_MASK);
	}

	test("LAR: null, interrupt gate, RPL 3 on DPL 0 give ZF=0, destination kept");
	uint16_t invalid[] = { 0, SEL_INT_GATE, SEL_KDATA | 3, SEL_PAST_GDT };
	for (unsigned i = 0; i < ARRAY_SIZE(invalid); i++) {
		v = 0xC0FFEE;
		expect_eq("ZF", 0, lar(invalid[i], &v));
		expect_eq("destination", 0xC0FFEE, v);
	}

	test("LAR: conforming code skips the privilege check");
	v = 0;
	expect_eq("ZF", 1, lar(SEL_CONFORMING | 3, &v));

	/* LSL gives the limit in bytes, scaled by G. */
	test("LSL: byte-granular, page-granular and TSS limits");
	v = 0;
	expect_eq("ZF", 1, lsl(SEL_SMALL, &v));
	expect_eq("limit of SEL_SMALL", 0xFFF, v);
	expect_eq("ZF", 1, lsl(SEL_KDATA, &v));
	expect_eq("limit of the flat segment", 0xFFFFFFFF, v);
	expect_eq("ZF", 1, lsl(SEL_TSS, &v));
	expect_eq("limit of the TSS", sizeof(main_tss) - 1, v);

	test("LSL: call gate, null and RPL 3 on DPL 0 give ZF=0");
	v = 0xC0FFEE;
	expect_eq("ZF for the call gate", 0, lsl(SEL_CALL_GATE, &v));
	expect_eq("ZF for null", 0, lsl(0, &v));
	expect_eq("ZF for RPL 3", 0, lsl(SEL_KDATA | 3, &v));
	expect_eq("destination", 0xC0FFEE, v);

	test("VERR/VERW: RW data, RO data, readable and execute-only code");
	expect_eq("VERR RW data", 1, verr(SEL_KDATA));
	expect_eq("VERW RW data", 1, verw(SEL_KDATA));
	expect_eq("VERR RO data", 1, verr(SEL_RO_DATA));
	expect_eq("VERW RO data", 0, verw(SEL_RO_DATA));
	expect_eq("VERR readable code", 1, verr(SEL_XR_CODE));
	expect_eq("VERW readable code", 0, verw(SEL_XR_CODE));
	expect_eq("VERR execute-only code", 0, verr(SEL_XO_CODE));
	expect_eq("VERW execute-only code", 0, verw(SEL_XO_CODE));

	test("VERR/VERW: null, system, RPL 3 on DPL 0, conforming code");
	expect_eq("VERR null", 0, verr(0));
	expect_eq("VERW null", 0, verw(0));
	expect_eq("VERR TSS", 0, verr(SEL_TSS));
	expect_eq("VERR RPL 3 on DPL 0 data", 0, verr(SEL_KDATA | 3));
	expect_eq("VERW RPL 3 on DPL 0 data", 0, verw(SEL_KDATA | 3));
	expect_eq("VERR RPL 3 on DPL 0 conforming code", 1, verr(SEL_CONFORMING | 3));

	/* ARPL raises the destination's RPL to the source's and sets ZF, or
	 * leaves it and clears ZF (SDM Vol. 2A ARPL). */
	test("ARPL: raises a lower RPL (ZF=1), keeps a higher one (ZF=0)");
	uint16_t dest = SEL_UDATA & ~3;
	uint8_t zf;
	asm volatile("arpl %w2, %w0\n setz %1" : "+r"(dest), "=q"(zf) : "r"(SEL_UCODE) : "cc");
	expect_eq("ZF", 1, zf);
	expect_eq("destination", SEL_UDATA, dest);
	dest = SEL_UDATA;
	asm volatile("arpl %w2, %w0\n setz %1" : "+r"(dest), "=q"(zf) : "r"(SEL_KCODE | 1) : "cc");
	expect_eq("ZF", 0, zf);
	expect_eq("destination", SEL_UDATA, dest);
}

int guest_main(void)
{
	tests_begin("pm-segments");
	setup_descriptors();
	limit_checks();
	code_limit_checks();
	type_checks();
	privilege_checks();
	query_instructions();
	tests_done();
}
