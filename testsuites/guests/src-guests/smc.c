/*
 * smc: self-modifying code. A store into memory that holds instructions
 * must be seen the next time those instructions run, however the CPU
 * (or an emulator's decoded-instruction cache or JIT) has kept them.
 *
 * SDM Vol. 3A 8.1.3 gives the portable recipe: store, then jump. Modern
 * processors go further and detect a store into an instruction already
 * fetched, even the very next one (SDM Vol. 3A 11.6, "Self-Modifying
 * Code"), and they compare physical addresses, so a store through a
 * second mapping of the page counts too. Each case below runs the code
 * first, so there is an old version to forget, then modifies it.
 */
#include "guest.h"

extern uint32_t smc_same_page(void), smc_other_page(void);
extern uint32_t smc_next_instruction(uint32_t v), smc_run_hot(uint32_t n);
extern uint32_t hot_target(void), alias_target(void);
extern uint8_t other_page_opcode[];
extern uint32_t hot_target_immediate, alias_target_immediate;

#define ALIAS 0x40000000u   /* a 4-MiB page mapping physical 0-4 MiB again */

static uint8_t jit_buffer[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* Three functions in machine code, written in turn to one buffer. */
static const uint8_t returns_0xa[] = { 0xB8, 0x0A, 0x00, 0x00, 0x00, 0xC3 };
static const uint8_t returns_0xb[] = { 0xB8, 0x0B, 0x00, 0x00, 0x00, 0xC3 };
static const uint8_t returns_3[] = { 0x31, 0xC0, 0x40, 0x40, 0x40, 0xC3 }; /* xor; inc x3 */

static void patch_then_jump(void)
{
	test("patch an executed instruction in the same page, then JMP");
	expect_eq("before and after (high, low word)", 0x00010002, smc_same_page());

	test("patch an executed opcode in another page (INC -> DEC), then JMP");
	expect_eq("before and after (high, low word)", 0x0011000F, smc_other_page());
}

static void patch_next_instruction(void)
{
	test("store into the immediate of the next instruction (no JMP)");
	expect_eq("first call", 5, smc_next_instruction(5));
	expect_eq("second call", 7, smc_next_instruction(7));
	expect_eq("third call", 0x12345678, smc_next_instruction(0x12345678));
}

static void hot_code(void)
{
	test("patch code after it ran 10000 times");
	expect_eq("sum of 10000 calls", 10000, smc_run_hot(10000));
	hot_target_immediate = 3;
	expect_eq("sum after the patch", 30000, smc_run_hot(10000));
	hot_target_immediate = 1;
	expect_eq("sum after patching back", 10000, smc_run_hot(10000));
}

static void rewritten_buffer(void)
{
	uint32_t (*fn)(void) = (uint32_t (*)(void))jit_buffer;

	test("a buffer rewritten with different code runs the new code");
	memcpy(jit_buffer, returns_0xa, sizeof(returns_0xa));
	expect_eq("first version", 0xA, fn());
	memcpy(jit_buffer, returns_0xb, sizeof(returns_0xb));
	expect_eq("second version", 0xB, fn());
	memcpy(jit_buffer, returns_3, sizeof(returns_3));
	expect_eq("third version", 3, fn());
}

/* SDM Vol. 3A 11.6: detection goes by physical address. With paging on,
 * ALIAS + p and p are one physical byte. */
static void physical_alias(void)
{
	uint32_t (*through_alias)(void) = (uint32_t (*)(void))(ALIAS + (uint32_t)alias_target);

	paging_identity_low(PTE_W);
	page_dir[ALIAS >> 22] = 0x00000000 | PDE_PS | PTE_P | PTE_W;
	paging_enable();

	test("store through another linear mapping of the code's page");
	expect_eq("before", 0xA, alias_target());
	*(volatile uint32_t *)(ALIAS + (uint32_t)&alias_target_immediate) = 0xB;
	expect_eq("run at the original address", 0xB, alias_target());

	test("code run through the alias sees a store through the original");
	expect_eq("run through the alias", 0xB, through_alias());
	alias_target_immediate = 0xC;
	expect_eq("run through the alias after the store", 0xC, through_alias());

	paging_disable();
}

int guest_main(void)
{
	tests_begin("smc");
	patch_then_jump();
	patch_next_instruction();
	hot_code();
	rewritten_buffer();
	physical_alias();
	tests_done();
}
