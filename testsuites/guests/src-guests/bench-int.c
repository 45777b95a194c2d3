/*
 * bench-int: a compute-bound integer benchmark, run with paging on.
 *
 * Each round sieves the primes below 100000, takes a bitwise CRC-32 of a
 * 16-KiB buffer, shuffles 64-KiB buffers around with memcpy and checks
 * them with memcmp, and heap-sorts 2048 pseudo-random numbers. The
 * results of every round fold into one 32-bit checksum, compared at the
 * end with the value recorded when the benchmark was written (under QEMU,
 * and again by the same C built for the host); a wrong instruction
 * anywhere shows up as a mismatch. bench-int runs 100 rounds, 441
 * million instructions counting each REP iteration as one (QEMU
 * -icount); bench-int-small (built with -DBENCH_SMALL) runs one round,
 * 5.9 million.
 *
 * Paging is on for the whole run, with both page sizes in use (SDM Vol.
 * 3A 4.3): code and stack go through 4-KiB pages mapping the first 4
 * MiB one-to-one, and all benchmark data through a 4-MiB page that maps
 * the same physical memory again at 1 GiB. An emulator's TLB and page
 * walk are therefore on the hot path.
 */
#include "guest.h"

#ifdef BENCH_SMALL
#define NAME "bench-int-small"
#define ROUNDS 1
#define EXPECTED_CHECKSUM 0x9145f486u
#else
#define NAME "bench-int"
#define ROUNDS 100
#define EXPECTED_CHECKSUM 0xd8e2b16au
#endif

#define ALIAS 0x40000000u
/* The same memory seen through the 4-MiB page. */
#define THROUGH_ALIAS(array) ((__typeof__(&(array)[0]))((uint32_t)(array) + ALIAS))

#define BENCH_VIEW(array) THROUGH_ALIAS(array)

static NORETURN void bench_failed(const char *what, uint32_t expected, uint32_t observed)
{
	kprintf(NAME ": %s: expected %#x, observed %#x\n", what, expected, observed);
	guest_exit(1);
}

#include "bench-work.h"

static void setup_paging(void)
{
	paging_identity_low(PTE_W);
	page_dir[ALIAS >> 22] = 0x00000000 | PDE_PS | PTE_P | PTE_W;
	paging_enable();
}

int guest_main(void)
{
	static const char check[] = "123456789";
	uint32_t checksum = 0;

	setup_paging();
	if (crc32((const uint8_t *)check, 9) != 0xCBF43926)
		bench_failed("CRC-32 of \"123456789\"", 0xCBF43926, crc32((const uint8_t *)check, 9));

	lcg_state = 1;
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < COPY_BYTES; j++)
			THROUGH_ALIAS(copy_buffers)[i][j] = (uint8_t)(lcg_next() >> 24);
	for (uint32_t round = 0; round < ROUNDS; round++)
		checksum = fold(checksum, run_round(round));
	paging_disable();

	kprintf(NAME " checksum 0x%08x\n", checksum);
	if (checksum != EXPECTED_CHECKSUM) {
		kprintf(NAME ": checksum mismatch: expected 0x%08x, observed 0x%08x\n",
			EXPECTED_CHECKSUM, checksum);
		return 1;
	}
	return 0;
}
