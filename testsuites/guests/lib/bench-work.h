/*
 * bench-work.h: the integer work of the benchmarks — a sieve, CRC-32 over
 * a buffer, a memcpy/memcmp mix and a heap sort, folded into one checksum.
 * Shared by builtin:bench-int (a bare kernel) and the demo OS's user
 * program `bench`, so both compute exactly the same thing.
 *
 * The includer provides: the uint8_t/uint32_t types, NAME, ROUNDS,
 * bench_failed(what, expected, observed), and BENCH_VIEW(array), the
 * address through which run_round touches each array (bench-int goes
 * through a 4-MiB page alias; the demo uses the arrays as they are).
 */
#define SIEVE_LIMIT 100000
#define PRIMES_BELOW_LIMIT 9592     /* pi(100000) */
#define CRC_BYTES 16384
#define COPY_BYTES 65536
#define SORT_COUNT 2048

static uint8_t sieve_flags[SIEVE_LIMIT];
static uint8_t crc_data[CRC_BYTES];
static uint8_t copy_buffers[3][COPY_BYTES] __attribute__((aligned(16)));
static uint32_t sort_data[SORT_COUNT];

static uint32_t lcg_state;

static uint32_t lcg_next(void)
{
	lcg_state = lcg_state * 1664525u + 1013904223u;
	return lcg_state;
}

static uint32_t fold(uint32_t checksum, uint32_t value)
{
	checksum ^= value;
	checksum = (checksum << 5) | (checksum >> 27);
	return checksum * 0x9E3779B1u;
}


static uint32_t sieve(uint8_t *flags)
{
	uint32_t count = 0;

	for (uint32_t i = 0; i < SIEVE_LIMIT; i++)
		flags[i] = 1;
	flags[0] = flags[1] = 0;
	for (uint32_t i = 2; i * i < SIEVE_LIMIT; i++)
		if (flags[i])
			for (uint32_t j = i * i; j < SIEVE_LIMIT; j += i)
				flags[j] = 0;
	for (uint32_t i = 0; i < SIEVE_LIMIT; i++)
		count += flags[i];
	return count;
}

/* CRC-32 as in zlib and Ethernet: reflected, polynomial 0xEDB88320,
 * one bit per step. */
static uint32_t crc32(const uint8_t *data, uint32_t length)
{
	uint32_t crc = 0xFFFFFFFF;

	for (uint32_t i = 0; i < length; i++) {
		crc ^= data[i];
		for (int bit = 0; bit < 8; bit++)
			crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1));
	}
	return ~crc;
}

/* Copies pseudo-random slices between the three buffers and compares
 * them, so that memcpy's and memcmp's results both feed the checksum. */
static uint32_t copy_and_compare(uint8_t (*buffers)[COPY_BYTES])
{
	uint32_t checksum = 0;

	for (int i = 0; i < 64; i++) {
		uint32_t from = lcg_next() % 3, to = (from + 1 + lcg_next() % 2) % 3;
		uint32_t length = 1 + lcg_next() % 4096;
		uint32_t src = lcg_next() % (COPY_BYTES - length);
		uint32_t dst = lcg_next() % (COPY_BYTES - length);

		memcpy(&buffers[to][dst], &buffers[from][src], length);
		checksum = fold(checksum, memcmp(&buffers[to][dst], &buffers[from][src], length));
		checksum = fold(checksum, memcmp(buffers[0], buffers[1], COPY_BYTES) + 2);
		buffers[to][lcg_next() % COPY_BYTES] ^= (uint8_t)lcg_next();
	}
	return checksum;
}

static void sift_down(uint32_t *a, uint32_t root, uint32_t end)
{
	while (2 * root + 1 < end) {
		uint32_t child = 2 * root + 1;

		if (child + 1 < end && a[child] < a[child + 1])
			child++;
		if (a[root] >= a[child])
			return;
		uint32_t t = a[root];
		a[root] = a[child];
		a[child] = t;
		root = child;
	}
}

static void heap_sort(uint32_t *a, uint32_t n)
{
	for (uint32_t i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (uint32_t end = n - 1; end > 0; end--) {
		uint32_t t = a[0];
		a[0] = a[end];
		a[end] = t;
		sift_down(a, 0, end);
	}
}

static uint32_t run_round(uint32_t round)
{
	uint8_t *flags = BENCH_VIEW(sieve_flags);
	uint8_t *crc_buffer = BENCH_VIEW(crc_data);
	uint8_t (*buffers)[COPY_BYTES] = BENCH_VIEW(copy_buffers);
	uint32_t *numbers = BENCH_VIEW(sort_data);
	uint32_t checksum = round, primes, weighted = 0;

	primes = sieve(flags);
	if (primes != PRIMES_BELOW_LIMIT)
		bench_failed("sieve: primes below 100000", PRIMES_BELOW_LIMIT, primes);
	checksum = fold(checksum, primes);

	for (uint32_t i = 0; i < CRC_BYTES; i++)
		crc_buffer[i] = (uint8_t)(lcg_next() >> 24);
	checksum = fold(checksum, crc32(crc_buffer, CRC_BYTES));

	checksum = fold(checksum, copy_and_compare(buffers));

	for (uint32_t i = 0; i < SORT_COUNT; i++)
		numbers[i] = lcg_next();
	heap_sort(numbers, SORT_COUNT);
	for (uint32_t i = 1; i < SORT_COUNT; i++)
		if (numbers[i - 1] > numbers[i])
			bench_failed("heap sort: element order at index", i - 1, i);
	for (uint32_t i = 0; i < SORT_COUNT; i++)
		weighted += numbers[i] * (i + 1);
	return fold(checksum, weighted);
}

