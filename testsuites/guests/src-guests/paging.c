/*
 * paging: 32-bit paging without PAE (SDM Vol. 3A 4.3), checked through
 * what the page-fault handler sees and what the walk writes back.
 *
 * A #PF pushes an error code whose low three bits say why (SDM Vol. 3A
 * 4.7): P (0 = the entry was not present, 1 = a protection violation),
 * W/R (the access was a write) and U/S (the access came from CPL 3). CR2
 * receives the linear address. The access rights of a 4-KiB page are the
 * combination of its directory and table entries: user access needs U/S
 * set in both, user writes need R/W set in both; supervisor writes obey
 * R/W only when CR0.WP=1 (SDM Vol. 3A 4.6). Without PAE/NX or SMEP the
 * error code's I/D bit stays 0, even for instruction fetches.
 *
 * The walk also writes: it sets the accessed bit in every entry it uses
 * and the dirty bit in the entry that maps a page written to (SDM Vol.
 * 3A 4.8). We only test that a mapping changed in memory is seen after
 * INVLPG or a CR3 load; whether a stale one is still seen without them
 * is up to the TLB and not checked.
 *
 * Layout: 0-4 MiB identity-mapped with 4-KiB pages (user-accessible, so
 * the CPL-3 tests can run our code and stack), a test window of 4-KiB
 * pages at 8 MiB whose entries each test rewrites, 12-16 MiB not
 * present at the directory level, and a 4-MiB page at 1 GiB aliasing
 * physical 0-4 MiB.
 */
#include "guest.h"

#define WINDOW 0x00800000u
#define WINDOW_PDE (WINDOW >> 22)
#define PAGE(i) (WINDOW + (i) * PAGE_SIZE)
#define NO_PDE 0x00C00000u
#define BIG_ALIAS 0x40000000u
#define BIG_PDE (BIG_ALIAS >> 22)

static uint32_t window_pt[1024] __attribute__((aligned(PAGE_SIZE)));
static uint8_t frames[4][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint32_t big_marker;

static volatile uint32_t at;      /* an instruction address, set by the asm */
static volatile uint32_t target;  /* the address a CPL-3 access uses */

/* The walk writes A and D behind the compiler's back: read entries
 * through volatile pointers so every check loads them afresh. */
static uint32_t pte_now(int page)
{
	return ((volatile uint32_t *)window_pt)[page];
}

static uint32_t pde_now(int index)
{
	return ((volatile uint32_t *)page_dir)[index];
}

static uint32_t frame(int i)
{
	return (uint32_t)frames[i];
}

static void set_pte(int page, uint32_t value)
{
	window_pt[page] = value;
	invlpg(PAGE(page));
}

static void set_pde(int index, uint32_t value)
{
	page_dir[index] = value;
	write_cr3(read_cr3());
}

static uint32_t read32(uint32_t address)
{
	return *(volatile uint32_t *)address;
}

static void write32(uint32_t address, uint32_t v)
{
	*(volatile uint32_t *)address = v;
}

/* The faulting instruction's address goes to `at` first. */
static void read_at(uint32_t address)
{
	asm volatile("movl $1f, %0\n1: movl (%1), %%eax" : "=m"(at) : "r"(address) : "eax", "memory");
}

static void write_at(uint32_t address)
{
	asm volatile("movl $1f, %0\n1: movl $0x600d, (%1)" : "=m"(at) : "r"(address) : "memory");
}

static void user_read(void)
{
	read_at(target);
}

static void user_write(void)
{
	write_at(target);
}

static void user_call(void)
{
	((void (*)(void))target)();
}

static void setup_paging(void)
{
	paging_identity_low(PTE_W | PTE_U);
	for (int i = 0; i < 1024; i++)
		window_pt[i] = 0;
	page_dir[WINDOW_PDE] = (uint32_t)window_pt | PTE_P | PTE_W | PTE_U;
	page_dir[BIG_PDE] = 0x00000000 | PDE_PS | PTE_P | PTE_W | PTE_U;
	paging_enable();
}

static void mappings(void)
{
	test("4-KiB page: the window maps a frame, both directions");
	*(volatile uint32_t *)(frame(0) + 8) = 0xF4A3E000;
	set_pte(0, frame(0) | PTE_P | PTE_W);
	expect_eq("read through the window", 0xF4A3E000, read32(PAGE(0) + 8));
	write32(PAGE(0) + 12, 0xF4A3E001);
	expect_eq("write seen through the identity map", 0xF4A3E001,
		  *(volatile uint32_t *)(frame(0) + 12));

	test("4-MiB page (CR4.PSE, PDE.PS): 1 GiB aliases physical 0");
	big_marker = 0xB16B16;
	expect_eq("read through the alias", 0xB16B16, read32(BIG_ALIAS + (uint32_t)&big_marker));
	write32(BIG_ALIAS + (uint32_t)&big_marker, 0xB16B17);
	expect_eq("write seen through the identity map", 0xB16B17, *(volatile uint32_t *)&big_marker);
}

static void not_present_faults(void)
{
	const struct trap_record *t;

	set_pte(1, 0);

	test("#PF: supervisor read, PTE not present: error 0, CR2, EIP");
	t = TRY(read_at(PAGE(1) + 0x123));
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", PAGE(1) + 0x123, t->cr2);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	test("#PF: supervisor write, PTE not present: error 2");
	t = TRY(write_at(PAGE(1) + 0x456));
	expect_trap(t, T_PF, 2);
	expect_eq("CR2", PAGE(1) + 0x456, t->cr2);

	test("#PF: supervisor read, PDE not present: error 0");
	t = TRY(read_at(NO_PDE + 0x789));
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", NO_PDE + 0x789, t->cr2);

	test("#PF: user read and write, PTE not present: errors 4 and 6");
	target = PAGE(1) + 4;
	t = run_user(user_read, EFLAGS_FIXED);
	expect_trap(t, T_PF, 4);
	expect_eq("CR2", PAGE(1) + 4, t->cr2);
	expect_eq("saved CS", SEL_UCODE, t->cs);
	t = run_user(user_write, EFLAGS_FIXED);
	expect_trap(t, T_PF, 6);
	expect_eq("CR2", PAGE(1) + 4, t->cr2);

	/* The fault is on the first byte that lies in the missing page. */
	test("#PF: a dword read straddling into a not-present page, CR2 = page start");
	set_pte(2, frame(2) | PTE_P | PTE_W);
	set_pte(3, 0);
	t = TRY(read_at(PAGE(2) + 0xFFE));
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", PAGE(3), t->cr2);
}

static void protection_faults(void)
{
	const struct trap_record *t;
	uint32_t cr0 = read_cr0();

	set_pte(0, frame(0) | PTE_P);                 /* supervisor, read-only */

	test("#PF: supervisor write to a read-only page with CR0.WP=1: error 3");
	t = TRY(write_at(PAGE(0)));
	expect_trap(t, T_PF, 3);
	expect_eq("CR2", PAGE(0), t->cr2);
	expect_eq("saved EIP (the MOV)", at, t->eip);

	test("#PF: read-modify-write (ADD to memory) on a read-only page: error 3");
	t = TRY(asm volatile("addl $1, (%0)" : : "r"(PAGE(0) + 16) : "memory", "cc"));
	expect_trap(t, T_PF, 3);

	test("supervisor write to a read-only page with CR0.WP=0 succeeds");
	write_cr0(cr0 & ~CR0_WP);
	t = TRY(write_at(PAGE(0) + 20));
	write_cr0(cr0);
	expect_no_trap(t);
	expect_eq("value written", 0x600d, *(volatile uint32_t *)(frame(0) + 20));

	test("#PF: user read and write of a supervisor page: errors 5 and 7");
	target = PAGE(0);
	t = run_user(user_read, EFLAGS_FIXED);
	expect_trap(t, T_PF, 5);
	expect_eq("CR2", PAGE(0), t->cr2);
	t = run_user(user_write, EFLAGS_FIXED);
	expect_trap(t, T_PF, 7);

	test("#PF: user write to a user read-only page: error 7; user read works");
	set_pte(0, frame(0) | PTE_P | PTE_U);
	t = run_user(user_write, EFLAGS_FIXED);
	expect_trap(t, T_PF, 7);
	expect_user_done(run_user(user_read, EFLAGS_FIXED));

	test("user write to a user read-write page works");
	set_pte(0, frame(0) | PTE_P | PTE_W | PTE_U);
	expect_user_done(run_user(user_write, EFLAGS_FIXED));

	test("#PF: PDE without U/S denies a user page: error 5");
	set_pde(WINDOW_PDE, (uint32_t)window_pt | PTE_P | PTE_W);
	t = run_user(user_read, EFLAGS_FIXED);
	set_pde(WINDOW_PDE, (uint32_t)window_pt | PTE_P | PTE_W | PTE_U);
	expect_trap(t, T_PF, 5);

	test("#PF: PDE without R/W denies a user write to a writable page: error 7");
	set_pde(WINDOW_PDE, (uint32_t)window_pt | PTE_P | PTE_U);
	t = run_user(user_write, EFLAGS_FIXED);
	set_pde(WINDOW_PDE, (uint32_t)window_pt | PTE_P | PTE_W | PTE_U);
	expect_trap(t, T_PF, 7);
}

/* mov $0x1234, %eax; ret */
static const uint8_t returns_0x1234[] = { 0xB8, 0x34, 0x12, 0x00, 0x00, 0xC3 };

static void instruction_fetch_faults(void)
{
	const struct trap_record *t;
	uint32_t v = 0;

	memcpy(frames[1], returns_0x1234, sizeof(returns_0x1234));
	frames[2][0xFFE] = 0xB8;     /* mov $imm32, %eax: 5 bytes, 3 of them on PAGE(3) */
	frames[2][0xFFF] = 0x34;
	set_pte(1, 0);
	set_pte(3, 0);

	test("#PF: supervisor fetch from a not-present page: error 0, EIP = CR2");
	t = TRY(((void (*)(void))PAGE(1))());
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", PAGE(1), t->cr2);
	expect_eq("saved EIP", PAGE(1), t->eip);

	test("fetch works once the page is present");
	set_pte(1, frame(1) | PTE_P);
	t = TRY(v = ((uint32_t (*)(void))PAGE(1))());
	expect_no_trap(t);
	expect_eq("EAX from the mapped code", 0x1234, v);

	test("#PF: user fetch from a supervisor page: error 5");
	target = PAGE(1);
	t = run_user(user_call, EFLAGS_FIXED);
	expect_trap(t, T_PF, 5);
	expect_eq("CR2", PAGE(1), t->cr2);
	expect_eq("saved EIP", PAGE(1), t->eip);
	expect_eq("saved CS", SEL_UCODE, t->cs);

	test("#PF: an instruction straddling into a not-present page: CR2 = page start");
	t = TRY(((void (*)(void))(PAGE(2) + 0xFFE))());
	expect_trap(t, T_PF, 0);
	expect_eq("CR2", PAGE(3), t->cr2);
	expect_eq("saved EIP (the instruction's first byte)", PAGE(2) + 0xFFE, t->eip);
}

/* A demand-paging handler: map the faulting page and restart the
 * instruction. REP MOVS is restartable: at the fault ESI, EDI and ECX
 * describe the iterations still to do (SDM Vol. 2B REP). */
static int demand_faults;

static void map_on_demand(struct trapframe *tf)
{
	uint32_t cr2 = read_cr2();

	demand_faults++;
	expect_eq("CR2 in the demand-paging handler", PAGE(3), cr2);
	expect_eq("ECX at the fault (iterations left)", 6, tf->ecx);
	expect_eq("EDI at the fault", PAGE(3), tf->edi);
	set_pte(3, frame(3) | PTE_P | PTE_W);
}

static void restartable_string_copy(void)
{
	static const uint32_t source[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	const uint32_t *src = source;
	uint32_t dst = PAGE(2) + 0xFF8, count = 8;

	test("#PF in REP MOVSD: the handler maps the page, the copy completes");
	set_pte(2, frame(2) | PTE_P | PTE_W);
	set_pte(3, 0);
	demand_faults = 0;
	set_trap_handler(T_PF, map_on_demand);
	asm volatile("cld\n rep movsl" : "+S"(src), "+D"(dst), "+c"(count) : : "memory");
	set_trap_handler(T_PF, NULL);
	expect_eq("page faults taken", 1, demand_faults);
	expect_eq("ECX after", 0, count);
	expect_eq("EDI after", PAGE(3) + 24, dst);
	for (int i = 0; i < 8; i++)
		expect_eq("copied dword", source[i], read32(PAGE(2) + 0xFF8 + 4 * i));
}

static void accessed_and_dirty(void)
{
	test("a read sets PTE.A and PDE.A, not PTE.D");
	set_pte(0, frame(0) | PTE_P | PTE_W);
	set_pde(WINDOW_PDE, (uint32_t)window_pt | PTE_P | PTE_W | PTE_U);
	(void)read32(PAGE(0));
	expect_eq("PTE.A", PTE_A, pte_now(0) & PTE_A);
	expect_eq("PTE.D", 0, pte_now(0) & PTE_D);
	expect_eq("PDE.A", PTE_A, pde_now(WINDOW_PDE) & PTE_A);

	test("a write sets PTE.D (and PTE.A)");
	set_pte(0, frame(0) | PTE_P | PTE_W);
	write32(PAGE(0), 1);
	expect_eq("PTE.A", PTE_A, pte_now(0) & PTE_A);
	expect_eq("PTE.D", PTE_D, pte_now(0) & PTE_D);

	test("a supervisor write with CR0.WP=0 to a read-only page sets PTE.D");
	uint32_t cr0 = read_cr0();
	set_pte(0, frame(0) | PTE_P);
	write_cr0(cr0 & ~CR0_WP);
	write32(PAGE(0), 2);
	write_cr0(cr0);
	expect_eq("PTE.D", PTE_D, pte_now(0) & PTE_D);

	test("4-MiB page: a read sets PDE.A, a write sets PDE.D");
	set_pde(BIG_PDE, 0x00000000 | PDE_PS | PTE_P | PTE_W | PTE_U);
	(void)read32(BIG_ALIAS + (uint32_t)&big_marker);
	expect_eq("PDE.A", PTE_A, pde_now(BIG_PDE) & PTE_A);
	expect_eq("PDE.D", 0, pde_now(BIG_PDE) & PTE_D);
	write32(BIG_ALIAS + (uint32_t)&big_marker, 3);
	expect_eq("PDE.D", PTE_D, pde_now(BIG_PDE) & PTE_D);
}

static void tlb_invalidation(void)
{
	*(volatile uint32_t *)frame(2) = 0x1111;
	*(volatile uint32_t *)frame(3) = 0x2222;

	test("INVLPG: a changed PTE is used after INVLPG");
	window_pt[4] = frame(2) | PTE_P | PTE_W;
	invlpg(PAGE(4));
	expect_eq("before the change", 0x1111, read32(PAGE(4)));
	window_pt[4] = frame(3) | PTE_P | PTE_W;
	invlpg(PAGE(4));
	expect_eq("after INVLPG", 0x2222, read32(PAGE(4)));

	test("MOV to CR3: a changed PTE is used after reloading CR3");
	window_pt[4] = frame(2) | PTE_P | PTE_W;
	write_cr3(read_cr3());
	expect_eq("after the CR3 load", 0x1111, read32(PAGE(4)));

	test("INVLPG: a PTE made not present faults after INVLPG");
	window_pt[4] = 0;
	invlpg(PAGE(4));
	expect_trap(TRY(read_at(PAGE(4))), T_PF, 0);
}

int guest_main(void)
{
	tests_begin("paging");
	setup_paging();
	mappings();
	not_present_faults();
	protection_faults();
	instruction_fetch_faults();
	restartable_string_copy();
	accessed_and_dirty();
	tlb_invalidation();
	paging_disable();
	tests_done();
}
