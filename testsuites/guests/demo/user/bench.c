/*
 * bench: the integer benchmark of src-guests/bench-int.c, as a user
 * program. Each round sieves the primes below 100000, takes a bitwise
 * CRC-32 of a 16-KiB buffer, shuffles 64-KiB buffers around with memcpy
 * and checks them with memcmp, and heap-sorts 2048 pseudo-random
 * numbers; the results fold into one checksum. The computation is the
 * one bench-int does, so the checksums are the same: 100 rounds give
 * 0xd8e2b16a, and bench-small (built with -DBENCH_SMALL) 1 round,
 * 0x9145f486. Here it runs in ring 3 with the timer preempting it, and
 * its 316 KiB of arrays are user pages of its own.
 */
#include "user.h"

#ifdef BENCH_SMALL
#define NAME "bench-small"
#define ROUNDS 1
#define EXPECTED_CHECKSUM 0x9145f486u
#else
#define NAME "bench"
#define ROUNDS 100
#define EXPECTED_CHECKSUM 0xd8e2b16au
#endif

#define BENCH_VIEW(array) (array)

static void bench_failed(const char *what, uint32_t expected, uint32_t observed)
{
	printf(NAME ": %s: expected 0x%x, observed 0x%x\n", what, expected, observed);
	exit(1);
}

/* The guests' shared benchmark work (testsuites/guests/lib/), found on
 * the include path: the same code bench-int runs without an OS. */
#include "bench-work.h"

int main(void)
{
	static const char check[] = "123456789";
	uint32_t checksum = 0;

	if (crc32((const uint8_t *)check, 9) != 0xCBF43926)
		bench_failed("CRC-32 of \"123456789\"", 0xCBF43926,
			     crc32((const uint8_t *)check, 9));

	lcg_state = 1;
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < COPY_BYTES; j++)
			copy_buffers[i][j] = (uint8_t)(lcg_next() >> 24);
	for (uint32_t round = 0; round < ROUNDS; round++)
		checksum = fold(checksum, run_round(round));

	printf(NAME ": checksum 0x%08x", checksum);
	if (checksum != EXPECTED_CHECKSUM) {
		printf(", expected 0x%08x\n", EXPECTED_CHECKSUM);
		return 1;
	}
	printf(" (correct)\n");
	return 0;
}
