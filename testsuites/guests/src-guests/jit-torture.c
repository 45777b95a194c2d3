/*
 * jit-torture: the cases a recompiler gets wrong. A translation of guest
 * code is a copy of what the code was, made for one linear address, with
 * the CPU's checks folded in; every case below first runs its code hot
 * (HOT times, past a compile threshold of 2000 runs, which the tests use) so
 * that a recompiler has translated it, then changes what the
 * translation assumed:
 *
 *   - the code, through a second linear mapping of its physical page
 *     (SDM Vol. 3A 11.6: self-modifying code is detected by physical
 *     address);
 *   - the very next instruction of the running block, every iteration;
 *   - the mapping of the second page an instruction straddles;
 *   - the code, by an IDE PIO read over it (ATA READ SECTORS, REP INSW);
 *   - the code, from outside: the debugger or a restored snapshot (the
 *     host-side tests do that while debugger_target runs);
 *   - whether each memory access of a long block faults: #PF, #GP, #SS,
 *     #DE, #UD, and the debug traps of TF and of data breakpoints, each
 *     with the state the instructions before it committed, and nothing
 *     of the faulting one (SDM Vol. 3A 6.5: faults are restartable);
 *   - when interrupts arrive: the 8254 at a high rate while the CPU runs
 *     tight loops, whose results and tick counts are printed so that two
 *     engines can be held to the same output.
 *
 * Paging is on throughout: 0-4 MiB one-to-one (user-accessible, for the
 * long block at CPL 3), the window at WINDOW for the data, straddling
 * and alias pages, and the long block's stack pages remapped at 0x7F000
 * and 0x80000. Every frame lies in this image's .bss.
 */
#include "guest.h"
#include "jit-torture.h"

/*
 * Runs before any change: well past a compile threshold of 2000 (the
 * tests run the guest at 2000 and at 1; ringside's default, 10000, leaves
 * more of it to the interpreter).
 */
#define HOT 3000

/* ---- paging ---- */

#define CODE_LIN (WINDOW + 32 * PAGE_SIZE)    /* two pages, the second unmapped in turn */
#define ALIAS_A (WINDOW + 40 * PAGE_SIZE)
#define ALIAS_B (WINDOW + 41 * PAGE_SIZE)
#define DATA_LIN(p) (WINDOW + (p) * PAGE_SIZE)
#define STACK_LOW_PAGE 0x0007F000
#define STACK_HIGH_PAGE 0x00080000

static uint32_t window_pt[1024] __attribute__((aligned(PAGE_SIZE)));
static uint8_t data_frames[DATA_PAGES][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t code_frames[2][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t alias_frame[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t stack_frames[2][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static uint32_t *pte_of(uint32_t lin)
{
	if (lin < WINDOW)
		return &page_table_low[lin >> 12];
	return &window_pt[(lin - WINDOW) >> 12];
}

static void map_page(uint32_t lin, const void *frame)
{
	*pte_of(lin) = (uint32_t)frame | PTE_P | PTE_W | PTE_U;
	invlpg(lin);
}

static void unmap_page(uint32_t lin)
{
	*pte_of(lin) = 0;
	invlpg(lin);
}

static void setup_paging(void)
{
	paging_identity_low(PTE_W | PTE_U);
	page_dir[WINDOW >> 22] = (uint32_t)window_pt | PTE_P | PTE_W | PTE_U;
	for (int p = 0; p < DATA_PAGES; p++)
		map_page(DATA_LIN(p), data_frames[p]);
	map_page(CODE_LIN, code_frames[0]);
	map_page(CODE_LIN + PAGE_SIZE, code_frames[1]);
	map_page(ALIAS_A, alias_frame);
	map_page(ALIAS_B, alias_frame);
	map_page(STACK_LOW_PAGE, stack_frames[0]);
	map_page(STACK_HIGH_PAGE, stack_frames[1]);
	paging_enable();
}

typedef uint32_t (*code_fn)(void);

/* MOV EAX, imm32; RET */
static void write_return_value(uint32_t at, uint32_t value)
{
	volatile uint8_t *p = (volatile uint8_t *)at;

	p[0] = 0xB8;
	for (int i = 0; i < 4; i++)
		p[1 + i] = (uint8_t)(value >> (8 * i));
	p[5] = 0xC3;
}

static uint32_t call_hot(code_fn fn, int times)
{
	uint32_t sum = 0;

	for (int i = 0; i < times; i++)
		sum += fn();
	return sum;
}

/* ---- a: one physical page, two linear aliases ---- */

static void aliases(void)
{
	code_fn a = (code_fn)ALIAS_A, b = (code_fn)ALIAS_B;
	uint32_t sum = 0, want = 0;

	test("alias: code hot through A, rewritten through B, runs anew through A");
	write_return_value((uint32_t)alias_frame, 0xA1A50001);
	expect_eq("sum of HOT calls through A", (uint32_t)(HOT * 0xA1A50001u), call_hot(a, HOT));
	write_return_value(ALIAS_B, 0xA1A50002);
	expect_eq("A after the store through B", 0xA1A50002, a());
	expect_eq("B after the store through B", 0xA1A50002, b());

	test("alias: code hot through B, rewritten through A, runs anew through B");
	expect_eq("sum of HOT calls through B", (uint32_t)(HOT * 0xA1A50002u), call_hot(b, HOT));
	write_return_value(ALIAS_A, 0xA1A50003);
	expect_eq("B after the store through A", 0xA1A50003, b());
	expect_eq("A after the store through A", 0xA1A50003, a());

	test("alias: each iteration stores an immediate through B, then calls A");
	for (uint32_t i = 0; i < HOT; i++) {
		*(volatile uint32_t *)(ALIAS_B + 1) = 7 * i + 1;
		sum += a();
		want += 7 * i + 1;
	}
	expect_eq("sum of what A returned", want, sum);
}

/* ---- b: a store into the next instruction ---- */

uint32_t next_immediate_loop(uint32_t n);
uint32_t next_opcode_loop(uint32_t n);

static void next_instruction(void)
{
	uint32_t n = HOT + 1;

	test("hot loop: a store into the immediate of the next instruction");
	expect_eq("sum of the immediates loaded", n * (n + 1) / 2, next_immediate_loop(n));

	test("hot loop: a store into the opcode of the next instruction");
	expect_eq("even << 16 | odd iterations", (n / 2) << 16 | (n + 1) / 2,
		  next_opcode_loop(n));
}

/* ---- c: instructions straddling into an unmapped page ---- */

static volatile uint32_t straddle_target;

struct straddler {
	const char *name;
	uint8_t insn[10];
	int len;
	int split;        /* bytes of the instruction on the first page */
};

/* INC EAX; INC ECX before the instruction, RET after it: the INCs must
 * be committed when the instruction faults. */
static uint32_t place_straddler(const struct straddler *s)
{
	uint32_t start = CODE_LIN + PAGE_SIZE - s->split;
	volatile uint8_t *p = (volatile uint8_t *)start;

	for (uint32_t a = CODE_LIN + PAGE_SIZE - 16; a < CODE_LIN + PAGE_SIZE + 16; a++)
		*(volatile uint8_t *)a = 0xCC;
	p[-2] = 0x40;
	p[-1] = 0x41;
	for (int i = 0; i < s->len; i++)
		p[i] = s->insn[i];
	p[s->len] = 0xC3;
	return start;
}

struct regs3 {
	uint32_t eax, ecx, edx;
};

static void call_with_regs(uint32_t entry, struct regs3 *r)
{
	asm volatile("call *%3"
		     : "+a"(r->eax), "+c"(r->ecx), "+d"(r->edx)
		     : "S"(entry)
		     : "memory", "cc");
}

static void straddle_one(const struct straddler *s, int is_add)
{
	uint32_t start = place_straddler(s), entry = start - 2;
	const struct trap_record *t;
	struct regs3 r;

	test(s->name);
	straddle_target = 0;
	for (uint32_t i = 0; i < HOT; i++) {
		r = (struct regs3){ i, 2 * i, 0 };
		call_with_regs(entry, &r);
		if (r.eax != i + 1 || r.ecx != 2 * i + 1) {
			expect_eq("EAX after INC", i + 1, r.eax);
			expect_eq("ECX after INC", 2 * i + 1, r.ecx);
		}
	}
	if (is_add)
		expect_eq("target after HOT additions", HOT * 0x01020304u, straddle_target);
	else
		expect_eq("EDX loaded", 0x12345678, r.edx);

	unmap_page(CODE_LIN + PAGE_SIZE);
	r = (struct regs3){ 0x100, 0x200, 0x300 };
	straddle_target = 0x5A5A;
	t = TRY(call_with_regs(entry, &r));
	expect_trap(t, T_PF, 0);   /* not present, supervisor, read (fetch: no I/D bit without NX) */
	expect_eq("CR2 (the unmapped page)", CODE_LIN + PAGE_SIZE, t->cr2);
	expect_eq("saved EIP (the instruction's first byte)", start, t->eip);
	expect_eq("EAX (INC before it committed)", 0x101, t->eax);
	expect_eq("ECX (INC before it committed)", 0x201, t->ecx);
	expect_eq("EDX (the faulting MOV committed nothing)", 0x300, t->edx);
	expect_eq("target (the faulting ADD committed nothing)", 0x5A5A, straddle_target);

	map_page(CODE_LIN + PAGE_SIZE, code_frames[1]);
	r = (struct regs3){ 0x100, 0x200, 0x300 };
	call_with_regs(entry, &r);
	expect_eq("EAX once the page is back", 0x101, r.eax);
	if (is_add)
		expect_eq("target once the page is back", 0x5A5A + 0x01020304, straddle_target);
	else
		expect_eq("EDX once the page is back", 0x12345678, r.edx);
}

static void straddling(void)
{
	uint32_t at = (uint32_t)&straddle_target;
	/* ADD dword [disp32], imm32: 81 /0, ModRM 05 (disp32 alone). */
	struct straddler add = {
		.insn = { 0x81, 0x05, (uint8_t)at, (uint8_t)(at >> 8), (uint8_t)(at >> 16),
			  (uint8_t)(at >> 24), 0x04, 0x03, 0x02, 0x01 },
		.len = 10,
	};
	struct straddler mov = {
		.name = "straddle: MOV EDX, imm32 with its last byte on an unmapped page: #PF",
		.insn = { 0xBA, 0x78, 0x56, 0x34, 0x12 },
		.len = 5,
		.split = 4,
	};
	static const struct {
		int split;
		const char *name;
	} splits[] = {
		{ 1, "straddle: ADD m32, imm32 split after its opcode: #PF, nothing committed" },
		{ 2, "straddle: ADD m32, imm32 split after its ModRM: #PF, nothing committed" },
		{ 4, "straddle: ADD m32, imm32 split inside its displacement: #PF" },
		{ 8, "straddle: ADD m32, imm32 split inside its immediate: #PF" },
	};

	straddle_one(&mov, 0);
	for (uint32_t i = 0; i < ARRAY_SIZE(splits); i++) {
		add.split = splits[i].split;
		add.name = splits[i].name;
		straddle_one(&add, 1);
	}
}

/* ---- d: code loaded by IDE PIO over code ---- */

#define ATA_DATA 0x1F0
#define ATA_SECTOR_COUNT 0x1F2
#define ATA_LBA_LOW 0x1F3
#define ATA_LBA_MID 0x1F4
#define ATA_LBA_HIGH 0x1F5
#define ATA_DEVICE 0x1F6
#define ATA_STATUS 0x1F7     /* read; Command on write */
#define ATA_COMMAND 0x1F7
#define ATA_ALT_STATUS 0x3F6 /* read; Device Control on write */
#define ATA_DEVICE_CONTROL 0x3F6
#define DC_NIEN 0x02
#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DF 0x20
#define ST_DRQ 0x08
#define ST_ERR 0x01
#define DEVICE_MASTER_LBA 0xE0   /* obsolete bits 7 and 5, LBA, DEV = 0 */
#define CMD_READ_SECTORS 0x20
#define CMD_WRITE_SECTORS 0x30
#define POLL_LIMIT 1000000u
#define SECTOR_BYTES 512

static uint8_t ide_code[SECTOR_BYTES] __attribute__((aligned(PAGE_SIZE)));
static uint8_t sector[SECTOR_BYTES];

static uint8_t ata_wait_not_busy(void)
{
	uint8_t st = inb(ATA_ALT_STATUS);

	for (uint32_t i = 0; i < POLL_LIMIT && (st & ST_BSY); i++)
		st = inb(ATA_ALT_STATUS);
	return st;
}

/* ATA-4 clause 9: 400 ns after selecting a device before its status is
 * valid; four Alternate Status reads take that long. */
static void ata_select_master(void)
{
	outb(ATA_DEVICE, DEVICE_MASTER_LBA);
	for (int i = 0; i < 4; i++)
		inb(ATA_ALT_STATUS);
}

/* A floating bus reads 0xFF, an empty channel 0x00. */
static int ata_master_present(void)
{
	uint8_t st;

	ata_select_master();
	st = inb(ATA_STATUS);
	if (st == 0x00 || st == 0xFF)
		return 0;
	return (ata_wait_not_busy() & (ST_BSY | ST_DRDY)) == ST_DRDY;
}

/* Polled PIO (nIEN set, so no IRQ 14): the command, then DRQ per block. */
static uint8_t ata_issue(uint8_t command, uint32_t lba)
{
	ata_select_master();
	ata_wait_not_busy();
	outb(ATA_SECTOR_COUNT, 1);
	outb(ATA_LBA_LOW, (uint8_t)lba);
	outb(ATA_LBA_MID, (uint8_t)(lba >> 8));
	outb(ATA_LBA_HIGH, (uint8_t)(lba >> 16));
	outb(ATA_COMMAND, command);
	inb(ATA_ALT_STATUS);
	return ata_wait_not_busy();
}

static void ata_write_sector(uint32_t lba, const void *buf)
{
	const void *src = buf;
	uint32_t words = SECTOR_BYTES / 2;
	uint8_t st = ata_issue(CMD_WRITE_SECTORS, lba);

	expect_eq("status before WRITE SECTORS data (BSY, DRQ, ERR)", ST_DRQ,
		  st & (ST_BSY | ST_DRQ | ST_ERR));
	asm volatile("rep outsw" : "+S"(src), "+c"(words) : "d"(ATA_DATA) : "memory");
	st = ata_wait_not_busy();
	expect_eq("status after WRITE SECTORS (BSY, DRQ, ERR, DF)", 0,
		  st & (ST_BSY | ST_DRQ | ST_ERR | ST_DF));
}

static void ata_read_sector(uint32_t lba, void *buf)
{
	void *dst = buf;
	uint32_t words = SECTOR_BYTES / 2;
	uint8_t st = ata_issue(CMD_READ_SECTORS, lba);

	expect_eq("status before READ SECTORS data (BSY, DRQ, ERR)", ST_DRQ,
		  st & (ST_BSY | ST_DRQ | ST_ERR));
	asm volatile("rep insw" : "+D"(dst), "+c"(words) : "d"(ATA_DATA) : "memory");
	st = ata_wait_not_busy();
	expect_eq("status after READ SECTORS (BSY, DRQ, ERR, DF)", 0,
		  st & (ST_BSY | ST_DRQ | ST_ERR | ST_DF));
}

/* A sector holding a function that returns `value`, then INT3 filler. */
static void code_sector(uint32_t value)
{
	memset(sector, 0xCC, sizeof(sector));
	write_return_value((uint32_t)sector, value);
}

static void ide_loaded_code(void)
{
	code_fn fn = (code_fn)ide_code;

	test("IDE: READ SECTORS by REP INSW over hot code runs the loaded code");
	if (!ata_master_present()) {
		skip("no IDE master disk");
		return;
	}
	outb(ATA_DEVICE_CONTROL, DC_NIEN);
	code_sector(0x1DE00001);
	ata_write_sector(1, sector);
	code_sector(0x1DE00002);
	ata_write_sector(2, sector);

	write_return_value((uint32_t)ide_code, 0x01D00000);
	expect_eq("sum of HOT calls of the old code", (uint32_t)(HOT * 0x01D00000u), call_hot(fn, HOT));
	ata_read_sector(1, ide_code);
	expect_eq("the loaded code's value", 0x1DE00001, fn());
	expect_eq("sum of HOT calls of the loaded code", (uint32_t)(HOT * 0x1DE00001u), call_hot(fn, HOT));
	ata_read_sector(2, ide_code);
	expect_eq("the second sector's value", 0x1DE00002, fn());
	code_sector(0x1DE00002);
	expect_eq("the buffer equals the sector written (0 = same)", 0,
		  (uint32_t)memcmp(ide_code, sector, SECTOR_BYTES));
}

/* ---- e: code changed from outside ---- */

uint32_t debugger_target(void);
extern uint32_t debugger_target_immediate;

#define OUTSIDE_CALLS 20000

static void changed_from_outside(void)
{
	uint32_t first = 0, other = 0, first_changed = 0, same = 0, changed = 0, mixed = 0;

	/* The host-side tests stop the machine while this loop runs (its
	 * test line is printed first), rewrite debugger_target's immediate
	 * or restore an older state, and let it run on. */
	test("debugger_target called in a hot loop while the host may rewrite it");
	for (uint32_t i = 0; i < OUTSIDE_CALLS; i++) {
		uint32_t v = debugger_target();

		if (i == 0)
			first = v;
		if (v == first && !changed) {
			same++;
		} else if (!changed) {
			other = v;
			first_changed = i;
			changed++;
		} else if (v == other) {
			changed++;
		} else {
			mixed++;
		}
	}
	kprintf("\n    debugger_target: %u calls, %u returned %#x, %u returned %#x from call %u ... ",
		OUTSIDE_CALLS, same, first, changed, other, changed ? first_changed : 0);
	expect_eq("the first call's value", DEBUGGER_TARGET_ORIGINAL, first);
	expect_eq("calls returning neither value, or going back", 0, mixed);

	test("debugger_target rewritten by the guest, then called hot");
	debugger_target_immediate = 0x0DE60003;
	expect_eq("sum of HOT calls", (uint32_t)(HOT * 0x0DE60003u), call_hot(debugger_target, HOT));
	/* Left changed: a state restored from before this test has the
	 * original code, and must run it. */
}

/* ---- f: a fault at each memory access of a long block ---- */

enum { EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI };
static const char *const reg_names[8] = { "EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI" };
#define STACK_SLOTS 3
#define FLAGS_CHECKED (EFLAGS_CF | EFLAGS_ZF | 0x80) /* CF, ZF, SF */
#define SF 0x80

/* What the CPU state should be after each of the block's instructions. */
struct block_state {
	uint32_t r[8];
	uint32_t flags;             /* CF, ZF, SF only */
	uint32_t d[DATA_PAGES];     /* data slot p: page p, 4*p bytes in */
	uint32_t s[STACK_SLOTS];    /* BLOCK_STACK_TOP - 4, -8, -12 */
};

struct block_context block_ctx;
volatile uint32_t block_repeats;
void long_block_entry(void);
extern const uint32_t long_block_insns[BLOCK_INSNS + 1];

static const uint32_t d_init[DATA_PAGES] = {
	D_INIT_0, D_INIT_1, D_INIT_2, D_INIT_3, D_INIT_4, D_INIT_5, D_INIT_6, D_INIT_7,
	D_INIT_8, D_INIT_9, D_INIT_10, D_INIT_11, D_INIT_12, D_INIT_13, D_INIT_14,
};

static uint32_t data_slot_lin(int p)
{
	return DATA_LIN(p) + 4 * p;
}

static volatile uint32_t *data_slot(int p)
{
	return (volatile uint32_t *)(data_frames[p] + 4 * p);
}

static uint32_t stack_slot_lin(int i)
{
	return BLOCK_STACK_TOP - 4 * (i + 1);
}

/* The frame behind a stack slot, read without the window's mapping. */
static volatile uint32_t *stack_slot(int i)
{
	uint32_t lin = stack_slot_lin(i);
	uint8_t *frame = lin >= STACK_HIGH_PAGE ? stack_frames[1] : stack_frames[0];

	return (volatile uint32_t *)(frame + (lin & 0xFFF));
}

static void model_zs(struct block_state *m, uint32_t v)
{
	m->flags &= EFLAGS_CF;
	if (v == 0)
		m->flags |= EFLAGS_ZF;
	if (v & 0x80000000u)
		m->flags |= SF;
}

static uint32_t model_add(struct block_state *m, uint32_t a, uint32_t b, uint32_t carry)
{
	uint64_t wide = (uint64_t)a + b + carry;

	m->flags = (wide >> 32) ? EFLAGS_CF : 0;
	model_zs(m, (uint32_t)wide);
	return (uint32_t)wide;
}

static uint32_t model_sub(struct block_state *m, uint32_t a, uint32_t b)
{
	m->flags = a < b ? EFLAGS_CF : 0;
	model_zs(m, a - b);
	return a - b;
}

static uint32_t model_logic(struct block_state *m, uint32_t v)
{
	m->flags = 0;
	model_zs(m, v);
	return v;
}

static int model_stack_index(uint32_t esp)
{
	return (BLOCK_STACK_TOP - esp) / 4 - 1;
}

static void model_push(struct block_state *m, uint32_t v)
{
	m->r[ESP] -= 4;
	m->s[model_stack_index(m->r[ESP])] = v;
}

static uint32_t model_pop(struct block_state *m)
{
	uint32_t v = m->s[model_stack_index(m->r[ESP])];

	m->r[ESP] += 4;
	return v;
}

/* Instruction j of the block (jit-torture.S, blk<j>), in C. */
static void block_model_step(struct block_state *m, int j)
{
	uint32_t *r = m->r, t;

	switch (j) {
	case 0: r[EAX] = m->d[0]; break;
	case 1: r[EAX] = model_add(m, r[EAX], 0x11111111, 0); break;
	case 2: m->d[1] = r[EAX]; break;
	case 3: r[ECX] = model_add(m, r[ECX], m->d[2], 0); break;
	case 4: model_push(m, r[EAX]); break;
	case 5: r[EDX] = model_logic(m, r[EDX] ^ r[ECX]); break;
	case 6: m->d[3] = model_sub(m, m->d[3], r[EDX]); break;
	case 7: r[ESI]++; model_zs(m, r[ESI]); break;
	case 8: model_push(m, m->d[4]); break;
	case 9:
		m->flags = (r[EDX] >> 29) & 1 ? EFLAGS_CF : 0;
		r[EDX] <<= 3;
		model_zs(m, r[EDX]);
		break;
	case 10: m->d[5] = r[EDX]; break;
	case 11: r[EDI] = model_pop(m); break;
	case 12: r[EDI] = model_logic(m, r[EDI] & m->d[6]); break;
	case 13: m->d[7] = r[EDI]; break;
	case 14: model_push(m, r[EDX]); break;
	case 15: m->d[8] = model_add(m, m->d[8], r[EAX], 0); break;
	case 16: r[EBP] = m->d[9] & 0xFF; break;
	case 17: r[EAX] = model_logic(m, r[EAX] | r[EBP]); break;
	case 18: t = m->d[10]; m->d[10] = r[EAX]; r[EAX] = t; break;
	case 19: r[ECX] = model_pop(m); break;
	case 20: model_push(m, 0x5a5a5a5a); break;
	case 21: model_push(m, r[EBP]); break;
	case 22: r[EDX] = model_add(m, r[EDX], m->d[11], 0); break;
	case 23: r[ESI] = model_add(m, r[ESI], r[EDX], m->flags & EFLAGS_CF); break;
	case 24: m->d[12] = r[ESI]; break;
	case 25: r[EAX] = model_pop(m); break;
	case 26: r[EDX] = model_pop(m); break;
	case 27: model_sub(m, m->d[13], r[EAX]); break;
	case 28: r[ECX] = (r[ECX] & ~0xFFu) | ((m->flags & EFLAGS_ZF) ? 1 : 0); break;
	case 29: m->d[14] = r[ECX]; break;
	}
}

/* The block's memory accesses in order: instruction, slot (data page p,
 * or stack slot STACK(i)), and whether it reads, writes or both. */
#define STACK(i) (DATA_PAGES + (i))
enum { RD = 1, WR = 2, RMW = 3 };
static const struct {
	uint8_t insn, slot, kind;
} block_accesses[] = {
	{ 0, 0, RD },	      { 2, 1, WR },	    { 3, 2, RD },	 { 4, STACK(0), WR },
	{ 6, 3, RMW },	      { 8, 4, RD },	    { 8, STACK(1), WR }, { 10, 5, WR },
	{ 11, STACK(1), RD }, { 12, 6, RD },	    { 13, 7, WR },	 { 14, STACK(1), WR },
	{ 15, 8, RMW },	      { 16, 9, RD },	    { 18, 10, RMW },	 { 19, STACK(1), RD },
	{ 20, STACK(1), WR }, { 21, STACK(2), WR }, { 22, 11, RD },	 { 24, 12, WR },
	{ 25, STACK(2), RD }, { 26, STACK(1), RD }, { 27, 13, RD },	 { 29, 14, WR },
};

static uint32_t slot_lin(int slot)
{
	return slot < DATA_PAGES ? data_slot_lin(slot) : stack_slot_lin(slot - DATA_PAGES);
}

static const uint32_t block_entry_regs[8] = {
	0x01234567, 0x89ABCDEF, 0x13579BDF, WINDOW, BLOCK_STACK_TOP, 0x2468ACE0,
	0xFFFFFFFE, 0x0F0F0F0F,
};

/* The state before the block and after its first `n` instructions. */
static void block_model(struct block_state *m, int n)
{
	memcpy(m->r, block_entry_regs, sizeof(m->r));
	m->flags = 0;
	memcpy(m->d, d_init, sizeof(m->d));
	for (int i = 0; i < STACK_SLOTS; i++)
		m->s[i] = 0xDEAD0000 + i;
	for (int j = 0; j < n; j++)
		block_model_step(m, j);
}

/* Puts the block's memory and registers back as block_model(m, 0) has
 * them, with the given DS and SS. */
static void block_reset(uint16_t ds, uint16_t ss, uint32_t repeats)
{
	struct block_state m;

	block_model(&m, 0);
	for (int p = 0; p < DATA_PAGES; p++)
		*data_slot(p) = m.d[p];
	for (int i = 0; i < STACK_SLOTS; i++)
		*stack_slot(i) = m.s[i];
	memcpy(block_ctx.r, m.r, sizeof(block_ctx.r));
	block_ctx.ds = ds;
	block_ctx.ss = ss;
	block_repeats = repeats;
}

static int block_insn_at(uint32_t eip)
{
	for (int j = 0; j <= BLOCK_INSNS; j++)
		if (long_block_insns[j] == eip)
			return j;
	return -1;
}

static void expect_reg(int after, const char *what, uint32_t want, uint32_t seen)
{
	if (want != seen)
		kprintf("(state after the block's first %d instructions) ", after);
	expect_eq(what, want, seen);
}

/* The registers (ESP among them), CF/ZF/SF when `check_flags`, and every
 * slot in memory against the model after `n` instructions. */
static void expect_block_state(int n, const uint32_t seen_r[8], uint32_t seen_flags,
			       int check_flags)
{
	struct block_state m;

	block_model(&m, n);
	for (int i = 0; i < 8; i++)
		expect_reg(n, reg_names[i], m.r[i], seen_r[i]);
	if (check_flags)
		expect_reg(n, "EFLAGS (CF, ZF, SF)", m.flags, seen_flags & FLAGS_CHECKED);
	for (int p = 0; p < DATA_PAGES; p++)
		expect_reg(n, "a data slot", m.d[p], *data_slot(p));
	for (int i = 0; i < STACK_SLOTS; i++)
		expect_reg(n, "a stack slot", m.s[i], *stack_slot(i));
}

static void trap_regs(const struct trap_record *t, uint32_t r[8])
{
	r[EAX] = t->eax, r[ECX] = t->ecx, r[EDX] = t->edx, r[EBX] = t->ebx;
	r[ESP] = t->esp, r[EBP] = t->ebp, r[ESI] = t->esi, r[EDI] = t->edi;
}

/* A fault at instruction j: the saved EIP is j's, and the state is the
 * model's after the j instructions before it. */
static void expect_block_fault(const struct trap_record *t, int vector, uint32_t error_code,
			       int j)
{
	uint32_t r[8];

	expect_trap(t, vector, error_code);
	expect_eq("saved EIP (the faulting instruction)", long_block_insns[j], t->eip);
	trap_regs(t, r);
	expect_block_state(j, r, t->eflags, 1);
}

#define SEL_LIMITED_DS SELECTOR(6, 3)
#define SEL_EXPAND_DOWN_SS SELECTOR(7, 3)

static const struct trap_record *run_block(uint32_t eflags)
{
	return run_user(long_block_entry, EFLAGS_FIXED | eflags);
}

static void block_hot(void)
{
	const struct trap_record *t;
	uint32_t r[8];

	test("long block: 3000 runs at CPL 3 end in the modelled state");
	block_reset(SEL_UDATA, SEL_UDATA, HOT);
	t = run_block(0);
	expect_user_done(t);
	trap_regs(t, r);
	/* The loop's DEC decides the final flags, so only registers and
	 * memory are compared. */
	expect_block_state(BLOCK_INSNS, r, 0, 0);
}

static void block_page_faults(void)
{
	const struct trap_record *t;

	test("long block: #PF at each data access, CR2 and error code, the state before it");
	for (uint32_t i = 0; i < ARRAY_SIZE(block_accesses); i++) {
		int slot = block_accesses[i].slot, j = block_accesses[i].insn;
		/* SDM Vol. 3A 4.7 does not say whether a not-present fault of
		 * a read-modify-write reports W/R as a read or a write, so it
		 * is checked only for plain reads and writes. */
		uint32_t mask = block_accesses[i].kind == RMW ? ~2u : ~0u;

		if (slot >= DATA_PAGES)
			continue;
		block_reset(SEL_UDATA, SEL_UDATA, 1);
		unmap_page(DATA_LIN(slot));
		t = run_block(0);
		map_page(DATA_LIN(slot), data_frames[slot]);
		expect_block_fault(t, T_PF, t->error_code, j);
		expect_eq("error code (U/S, W/R, P)", (4 | (block_accesses[i].kind == WR ? 2 : 0)) & mask,
			  t->error_code & mask);
		expect_eq("CR2", slot_lin(slot), t->cr2);
	}

	test("long block: #PF at the first push on each of its two stack pages");
	block_reset(SEL_UDATA, SEL_UDATA, 1);
	unmap_page(STACK_HIGH_PAGE);
	t = run_block(0);
	map_page(STACK_HIGH_PAGE, stack_frames[1]);
	expect_block_fault(t, T_PF, 6, 4);
	expect_eq("CR2", stack_slot_lin(0), t->cr2);
	block_reset(SEL_UDATA, SEL_UDATA, 1);
	unmap_page(STACK_LOW_PAGE);
	t = run_block(0);
	map_page(STACK_LOW_PAGE, stack_frames[0]);
	expect_block_fault(t, T_PF, 6, 8);
	expect_eq("CR2", stack_slot_lin(1), t->cr2);
}

/* A DS whose limit ends just below data page p: the block's access to
 * page p is the first beyond it (SDM Vol. 3A 5.3). */
static void block_ds_limit_faults(void)
{
	test("long block: #GP(0) at each data access past a DS limit");
	if (skip_on_qemu("TCG checks no data segment limits"))
		return;
	for (uint32_t i = 0; i < ARRAY_SIZE(block_accesses); i++) {
		int slot = block_accesses[i].slot;

		if (slot >= DATA_PAGES)
			continue;
		gdt_set(SEL_LIMITED_DS >> 3,
			segment_descriptor(0, (DATA_LIN(slot) >> 12) - 1,
					   ACC_P | ACC_DPL(3) | ACC_DATA_RW, FLAG_G | FLAG_DB));
		block_reset(SEL_LIMITED_DS, SEL_UDATA, 1);
		expect_block_fault(run_block(0), T_GP, 0, block_accesses[i].insn);
	}

}

/* Expand-down with B=1: offsets above the limit are valid (SDM Vol. 3A
 * 3.4.5.1), so a limit at a stack slot makes the first push that reaches
 * it the first stack access out of bounds. */
static void block_ss_limit_faults(void)
{
	static const uint8_t deepening[STACK_SLOTS] = { 4, 8, 21 };

	test("long block: #SS(0) at each push that deepens an expand-down stack");
	if (skip_on_qemu("TCG checks no data segment limits"))
		return;
	for (int i = 0; i < STACK_SLOTS; i++) {
		gdt_set(SEL_EXPAND_DOWN_SS >> 3,
			segment_descriptor(0, stack_slot_lin(i),
					   ACC_P | ACC_DPL(3) | ACC_DATA_RW_DOWN, FLAG_DB));
		block_reset(SEL_UDATA, SEL_EXPAND_DOWN_SS, 1);
		expect_block_fault(run_block(0), T_SS, 0, deepening[i]);
	}
}

/* Replaces instruction j's first two bytes, runs the block, puts them
 * back. */
static const struct trap_record *run_block_patched(int j, uint8_t b0, uint8_t b1)
{
	volatile uint8_t *p = (volatile uint8_t *)long_block_insns[j];
	uint8_t old0 = p[0], old1 = p[1];
	const struct trap_record *t;

	p[0] = b0;
	p[1] = b1;
	block_reset(SEL_UDATA, SEL_UDATA, 1);
	t = run_block(0);
	p[0] = old0;
	p[1] = old1;
	return t;
}

static void block_instruction_faults(void)
{
	test("long block: #DE at each instruction (DIV AH put in its place)");
	for (int j = 0; j < BLOCK_INSNS; j++) {
		/* DIV AH divides AX by AH: by zero, or a quotient of at least
		 * 256 that does not fit AL. Either way #DE (SDM Vol. 2A DIV). */
		expect_block_fault(run_block_patched(j, 0xF6, 0xF4), T_DE, 0, j);
	}

	test("long block: #UD at each instruction (UD2 put in its place)");
	for (int j = 0; j < BLOCK_INSNS; j++)
		expect_block_fault(run_block_patched(j, 0x0F, 0x0B), T_UD, 0, j);

	test("long block: the unpatched block runs as before");
	block_reset(SEL_UDATA, SEL_UDATA, 1);
	{
		const struct trap_record *t = run_block(0);
		uint32_t r[8];

		expect_user_done(t);
		trap_regs(t, r);
		expect_block_state(BLOCK_INSNS, r, 0, 0);
	}
}

/* ---- the debug traps: a handler checks each and returns ---- */

#define DR6_B(n) (1u << (n))
#define DR6_BS 0x4000
#define DR6_CHECKED 0x400F

static int debug_traps_seen;
static int debug_next_insn[BLOCK_INSNS + 1];  /* expected "after" counts, in order */
static int debug_expected;
static uint32_t debug_dr6;

static void check_debug_trap(struct trapframe *tf)
{
	uint32_t r[8] = { tf->eax, tf->ecx, tf->edx, tf->ebx, tf->esp, tf->ebp, tf->esi, tf->edi };
	uint32_t dr6 = read_dr6();
	int after = block_insn_at(tf->eip);

	write_dr6(0);
	/* Single steps through the runtime's code and the stub are not
	 * the block's. */
	if (after < 0 || (tf->cs & 3) != 3)
		return;
	if (debug_traps_seen >= debug_expected)
		expect_eq("debug traps in the block (one too many)", debug_expected,
			  debug_traps_seen + 1);
	expect_eq("the instruction the debug trap follows", debug_next_insn[debug_traps_seen],
		  after);
	expect_eq("DR6 (BS, B3-B0)", debug_dr6, dr6 & DR6_CHECKED);
	expect_block_state(after, r, tf->eflags, 1);
	debug_traps_seen++;
}

static void block_debug_traps(void)
{
	const struct trap_record *t;

	test("long block: TF traps after every instruction with its state");
	debug_expected = BLOCK_INSNS + 1;
	for (int j = 0; j <= BLOCK_INSNS; j++)
		debug_next_insn[j] = j;     /* after the stub (0 done), then each */
	debug_traps_seen = 0;
	debug_dr6 = DR6_BS;
	set_trap_handler(T_DB, check_debug_trap);
	block_reset(SEL_UDATA, SEL_UDATA, 1);
	t = run_block(EFLAGS_TF);
	set_trap_handler(T_DB, NULL);
	expect_user_done(t);
	expect_eq("single-step traps in the block", BLOCK_INSNS + 1, debug_traps_seen);

	/* DR7: Ln enables breakpoint n; R/Wn = 11 (reads and writes) and
	 * LENn = 11 (4 bytes) in bits 16 + 4n (SDM Vol. 3A 17.2.4). */
	test("long block: a data breakpoint on each slot traps after every access to it");
	set_trap_handler(T_DB, check_debug_trap);
	for (int slot = 0; slot < STACK(STACK_SLOTS); slot++) {
		int n = slot % 4;
		uint32_t lin = slot_lin(slot);

		debug_expected = 0;
		for (uint32_t i = 0; i < ARRAY_SIZE(block_accesses); i++)
			if (block_accesses[i].slot == slot)
				debug_next_insn[debug_expected++] = block_accesses[i].insn + 1;
		debug_traps_seen = 0;
		debug_dr6 = DR6_B(n);
		switch (n) {
		case 0: write_dr0(lin); break;
		case 1: write_dr1(lin); break;
		case 2: asm volatile("mov %0, %%dr2" : : "r"(lin)); break;
		case 3: asm volatile("mov %0, %%dr3" : : "r"(lin)); break;
		}
		write_dr6(0);
		write_dr7((1u << (2 * n)) | (0xFu << (16 + 4 * n)));
		block_reset(SEL_UDATA, SEL_UDATA, 1);
		t = run_block(0);
		write_dr7(0);
		expect_user_done(t);
		expect_eq("data breakpoint traps", debug_expected, debug_traps_seen);
	}
	set_trap_handler(T_DB, NULL);
}

static void long_block(void)
{
	block_hot();
	block_page_faults();
	block_ds_limit_faults();
	block_ss_limit_faults();
	block_instruction_faults();
	block_debug_traps();
}

/* ---- g: interrupts in tight loops ---- */

#define PIC_MASTER 0x20
#define PIC_SLAVE 0xA0
#define VEC_TIMER 0x20
#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_CH0_RATE_GENERATOR 0x34
/* 1193182 Hz / 10: a tick every 8.4 us, a few thousand instructions. */
#define PIT_DIVISOR 10
#define STORE_WORDS 32768

volatile uint32_t ticks;
void tick_entry(void);
uint32_t irq_sum_loop(uint32_t n);
void irq_store_loop(uint32_t *buf, uint32_t n);
uint32_t irq_call_loop(uint32_t n);
void irq_rep_stos(uint32_t *buf, uint32_t n, uint32_t value);
uint32_t irq_spin_until(uint32_t target, uint32_t limit);

static uint32_t store_buf[STORE_WORDS];

/* The 8259A pair at vectors 0x20-0x2F with only IR0 unmasked, as
 * irq-pm sets it up, and the 8254's channel 0 as a rate generator. */
static void timer_start(void)
{
	outb(PIC_MASTER, 0x11);
	outb(PIC_MASTER + 1, VEC_TIMER);
	outb(PIC_MASTER + 1, 1 << 2);
	outb(PIC_MASTER + 1, 0x01);
	outb(PIC_SLAVE, 0x11);
	outb(PIC_SLAVE + 1, VEC_TIMER + 8);
	outb(PIC_SLAVE + 1, 2);
	outb(PIC_SLAVE + 1, 0x01);
	outb(PIC_MASTER + 1, 0xFE);
	outb(PIC_SLAVE + 1, 0xFF);
	idt_set(VEC_TIMER, gate_descriptor(SEL_KCODE, (uint32_t)tick_entry,
					   ACC_P | ACC_INT_GATE32, 0));
	outb(PIT_COMMAND, PIT_CH0_RATE_GENERATOR);
	outb(PIT_CHANNEL0, PIT_DIVISOR & 0xFF);
	outb(PIT_CHANNEL0, PIT_DIVISOR >> 8);
}

static void timer_stop(void)
{
	outb(PIC_MASTER + 1, 0xFF);
}

static void interrupts_in_loops(void)
{
	uint32_t sum_ticks, store_ticks, call_ticks, stos_ticks, spin_ticks, left, n;

	timer_start();

	test("IRQ 0 during a DEC/JNZ loop: the sum is right, ticks arrived");
	n = 100000;
	ticks = 0;
	expect_eq("sum n..1", (uint32_t)((uint64_t)n * (n + 1) / 2), irq_sum_loop(n));
	sum_ticks = ticks;
	if (sum_ticks == 0)
		expect_eq("ticks during the loop (more than 0)", 1, 0);

	test("IRQ 0 during a loop of stores: every word is right");
	ticks = 0;
	irq_store_loop(store_buf, STORE_WORDS);
	store_ticks = ticks;
	for (uint32_t i = 0; i < STORE_WORDS; i++)
		if (store_buf[i] != 3 * (i + 1))
			expect_eq("a stored word", 3 * (i + 1), store_buf[i]);
	if (store_ticks == 0)
		expect_eq("ticks during the loop (more than 0)", 1, 0);

	test("IRQ 0 during a loop of calls: the count is right");
	n = 30000;
	ticks = 0;
	expect_eq("3 * calls", 3 * n, irq_call_loop(n));
	call_ticks = ticks;
	if (call_ticks == 0)
		expect_eq("ticks during the loop (more than 0)", 1, 0);

	test("IRQ 0 during REP STOSD: every word is stored once");
	ticks = 0;
	irq_rep_stos(store_buf, STORE_WORDS, 0x57057057);
	stos_ticks = ticks;
	for (uint32_t i = 0; i < STORE_WORDS; i++)
		if (store_buf[i] != 0x57057057)
			expect_eq("a stored word", 0x57057057, store_buf[i]);

	test("a loop spinning on a counter the ISR increments sees it change");
	ticks = 0;
	left = irq_spin_until(20, 10000000);
	spin_ticks = ticks;
	if (left == 0)
		expect_eq("turns left when 20 ticks had come (more than 0)", 1, 0);
	if (spin_ticks < 20)
		expect_eq("ticks when the spin ended (at least 20)", 20, spin_ticks);
	timer_stop();

	kprintf("\n    ticks: %u in the sum loop, %u in the store loop, %u in the call loop, "
		"%u in REP STOSD; the spin ended with %u turns left ... ",
		sum_ticks, store_ticks, call_ticks, stos_ticks, left);
}

int guest_main(void)
{
	tests_begin("jit-torture");
	setup_paging();
	aliases();
	next_instruction();
	straddling();
	ide_loaded_code();
	changed_from_outside();
	long_block();
	interrupts_in_loops();
	tests_done();
}
