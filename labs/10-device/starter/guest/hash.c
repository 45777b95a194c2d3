/*
 * hash.c: the guest that uses your device (given: do not change it). It
 * hashes five strings with the device, each by writing its bytes to
 * DATA, START, and waiting for the device's interrupt on IRQ 5 (through
 * the 8259A PIC, vector 37), then reads RESULT and compares it with the
 * hash computed here in software. It prints one line per string and
 * ends with status 0 when every hash matched.
 */
#include "lab.h"

#define HASH_DATA 0x310
#define HASH_CMD 0x311
#define HASH_RESULT 0x314
#define CMD_RESET 0
#define CMD_START 1
#define STATUS_BUSY 1
#define STATUS_DONE 2

static volatile uint32_t irqs;
static volatile int done;

void device_interrupt(void)
{
	irqs++;
	done = 1;
	outb(0x20, 0x20); /* end of interrupt (the master PIC) */
}

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s) {
		h ^= (uint8_t)*s++;
		h *= 16777619u;
	}
	return h;
}

/* The 8259A pair: vectors 32-47, only IRQ 5 unmasked. */
static void pic_init(void)
{
	outb(0x20, 0x11);
	outb(0xA0, 0x11);
	outb(0x21, 32);
	outb(0xA1, 40);
	outb(0x21, 0x04);
	outb(0xA1, 0x02);
	outb(0x21, 0x01);
	outb(0xA1, 0x01);
	outb(0x21, (uint8_t)~(1 << 5));
	outb(0xA1, 0xFF);
}

static int hash_one(const char *s)
{
	uint32_t expected = fnv1a(s), got, status;
	int n;

	outb(HASH_CMD, CMD_RESET);
	for (const char *p = s; *p; p++)
		outb(HASH_DATA, (uint8_t)*p);
	done = 0;
	outb(HASH_CMD, CMD_START);
	status = inb(HASH_CMD);
	if (!(status & STATUS_BUSY)) {
		puts("the device is not busy right after START (status ");
		put_hex(status);
		puts(")\n");
		return 0;
	}
	for (n = 0; !done && n < 1000000; n++)
		__asm__ volatile("pause");
	if (!done) {
		puts("no interrupt from the device after START\n");
		return 0;
	}
	status = inb(HASH_CMD);
	if (status != STATUS_DONE) {
		puts("status after the interrupt is ");
		put_hex(status);
		puts(", not DONE alone\n");
		return 0;
	}
	got = inl(HASH_RESULT);
	puts("fnv1a(\"");
	puts(s);
	puts("\") = ");
	put_hex(got);
	if (got != expected) {
		puts(", expected ");
		put_hex(expected);
		puts("\n");
		return 0;
	}
	status = inb(HASH_CMD);
	if (status != 0) {
		puts(": the status is still ");
		put_hex(status);
		puts(" after RESULT was read\n");
		return 0;
	}
	puts(" ok\n");
	return 1;
}

void kmain(void)
{
	static const char *const strings[] = {
		"", "a", "hello", "ringside", "The quick brown fox jumps over the lazy dog",
	};
	int good = 0;

	pic_init();
	sti();
	for (unsigned i = 0; i < sizeof strings / sizeof strings[0]; i++)
		good += hash_one(strings[i]);
	puts("irqs: ");
	put_dec(irqs);
	puts("\n");
	exit(good == sizeof strings / sizeof strings[0] ? 0 : 1);
}
