/*
 * ide.c: a PIO ATA driver for the primary IDE channel, driven by IRQ 14,
 * after ATA/ATAPI-4 (NCITS 317-1998).
 *
 * Two devices share the channel's registers (clause 7): the DEV bit of
 * the Device register selects which one the next register access and
 * command address, and only the selected device drives INTRQ. With nIEN
 * clear in the Device Control register, a device asserts INTRQ whenever
 * it wants the host (clause 9):
 *
 *   PIO data-in (IDENTIFY DEVICE, READ SECTORS, READ MULTIPLE): once per
 *   block, when the block is ready in the sector buffer (DRQ set); the
 *   host reads Status, which clears INTRQ, then the block's words.
 *
 *   PIO data-out (WRITE SECTORS, WRITE MULTIPLE): the first block is
 *   asked for without an interrupt (the host polls until BSY clears and
 *   DRQ sets); after each block the device interrupts, with DRQ set if it
 *   wants another and DRQ clear when the command is complete.
 *
 *   Non-data (SET MULTIPLE MODE): one interrupt at completion.
 *
 * A block is one sector, or the multiple count set by SET MULTIPLE MODE
 * for the MULTIPLE commands. Every poll here is bounded, and every wait
 * for an interrupt gives up after a second of LAPIC timer ticks.
 */
#include "pc-hw.h"

#define ATA_DATA 0x1F0
#define ATA_ERROR 0x1F1        /* read; Features on write */
#define ATA_FEATURES 0x1F1
#define ATA_SECTOR_COUNT 0x1F2
#define ATA_LBA_LOW 0x1F3
#define ATA_LBA_MID 0x1F4
#define ATA_LBA_HIGH 0x1F5
#define ATA_DEVICE 0x1F6
#define ATA_STATUS 0x1F7       /* read; Command on write */
#define ATA_COMMAND 0x1F7
#define ATA_ALT_STATUS 0x3F6   /* read; Device Control on write */
#define ATA_DEVICE_CONTROL 0x3F6

#define DC_NIEN 0x02          /* Device Control: INTRQ disabled */

#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DF 0x20
#define ST_DRQ 0x08
#define ST_ERR 0x01

/* Device register: bits 7 and 5 are obsolete and traditionally set
 * (0xA0 master, 0xB0 slave); bit 6 selects LBA; bits 3-0 are LBA 27-24. */
#define DEVICE_OBSOLETE 0xA0
#define DEVICE_LBA 0x40
#define DEVICE_DEV 0x10

#define CMD_READ_SECTORS 0x20
#define CMD_WRITE_SECTORS 0x30
#define CMD_READ_MULTIPLE 0xC4
#define CMD_WRITE_MULTIPLE 0xC5
#define CMD_SET_MULTIPLE_MODE 0xC6
#define CMD_IDENTIFY_DEVICE 0xEC

#define POLL_LIMIT 1000000u
#define IRQ_TIMEOUT_TICKS TIMER_HZ

volatile uint32_t ide_irqs;
static volatile uint8_t irq_status;

/* Reading Status (not Alternate Status) is what clears INTRQ. */
static void ide_interrupt(struct trapframe *tf)
{
	(void)tf;
	irq_status = inb(ATA_STATUS);
	ide_irqs++;
	lapic_eoi();
}

/* The Device Control register is written to both devices at once. */
void ide_interrupts_on(void)
{
	set_trap_handler(VEC_IDE, ide_interrupt);
	outb(ATA_DEVICE_CONTROL, 0);
}

/* ATA-4 clause 9: after selecting a device, the host waits 400 ns
 * before Status is valid; four reads of Alternate Status take that long on an
 * ISA bus. */
static void delay_400ns(void)
{
	for (int i = 0; i < 4; i++)
		inb(ATA_ALT_STATUS);
}

/* Returns the status once BSY is clear, or with BSY still set. */
static uint8_t wait_not_busy(void)
{
	uint8_t st = inb(ATA_ALT_STATUS);

	for (uint32_t i = 0; i < POLL_LIMIT && (st & ST_BSY); i++)
		st = inb(ATA_ALT_STATUS);
	return st;
}

static struct ide_result failed(struct ide_result r, const char *why, uint8_t st)
{
	r.ok = 0;
	r.failure = why;
	r.status = st;
	r.error = inb(ATA_ERROR);
	return r;
}

/* Selects the device, waits until it can take a command (BSY clear,
 * DRDY set), loads the taskfile and writes the command. */
static int issue(int drive, uint8_t command, uint32_t lba, int count,
		 uint8_t *status)
{
	uint8_t st;

	outb(ATA_DEVICE, DEVICE_OBSOLETE | DEVICE_LBA | (drive ? DEVICE_DEV : 0) |
				 ((lba >> 24) & 0x0F));
	delay_400ns();
	st = wait_not_busy();
	*status = st;
	if ((st & (ST_BSY | ST_DRDY)) != ST_DRDY)
		return 0;
	outb(ATA_FEATURES, 0);
	outb(ATA_SECTOR_COUNT, (uint8_t)count);
	outb(ATA_LBA_LOW, (uint8_t)lba);
	outb(ATA_LBA_MID, (uint8_t)(lba >> 8));
	outb(ATA_LBA_HIGH, (uint8_t)(lba >> 16));
	outb(ATA_COMMAND, command);
	return 1;
}

/* Waits for the next interrupt of the command and checks the status it
 * read: no error, and DRQ as the protocol expects at this point. */
static const char *next_interrupt(uint32_t target, int want_drq, uint8_t *st)
{
	if (!wait_for_interrupt(&ide_irqs, target, IRQ_TIMEOUT_TICKS)) {
		*st = inb(ATA_ALT_STATUS);
		return "no IRQ 14 within a second";
	}
	*st = irq_status;
	if (*st & (ST_BSY | ST_ERR | ST_DF))
		return "status at the interrupt shows BSY, ERR or DF";
	if (want_drq && !(*st & ST_DRQ))
		return "status at the interrupt has no DRQ";
	if (!want_drq && (*st & ST_DRQ))
		return "status at the interrupt still has DRQ";
	return NULL;
}

/* With nIEN set, the host polls instead: BSY clear and DRQ set mean
 * the next block is ready (ATA-4 clause 9, PIO data-in). */
static const char *next_block_polled(uint8_t *st)
{
	*st = wait_not_busy();
	if (*st & (ST_BSY | ST_ERR | ST_DF))
		return "polled status shows BSY, ERR or DF";
	if (!(*st & ST_DRQ))
		return "polled status has no DRQ";
	return NULL;
}

/* PIO data-in: one interrupt (or, polled, DRQ), then one block of words,
 * per block. */
static struct ide_result pio_in(int drive, uint8_t command, uint32_t lba,
				int count, int block, void *buf, int polled)
{
	struct ide_result r = { 0 };
	uint32_t first = ide_irqs;
	uint8_t *p = buf;
	const char *why;
	uint8_t st;

	if (!issue(drive, command, lba, count, &st))
		return failed(r, "device not ready for a command", st);
	for (int done = 0; done < count; done += block) {
		int n = count - done < block ? count - done : block;

		if (polled)
			why = next_block_polled(&st);
		else
			why = next_interrupt(first + (uint32_t)(done / block), 1, &st);
		r.irqs = ide_irqs - first;
		if (why)
			return failed(r, why, st);
		insw(ATA_DATA, p + done * SECTOR_BYTES, n * SECTOR_BYTES / 2);
	}
	st = wait_not_busy();
	r.irqs = ide_irqs - first;
	if (st & (ST_BSY | ST_DRQ | ST_ERR))
		return failed(r, "after the last block: BSY, DRQ or ERR", st);
	r.ok = 1;
	r.status = st;
	return r;
}

/* PIO data-out: the first block on DRQ alone, then an interrupt after
 * each block. */
static struct ide_result pio_out(int drive, uint8_t command, uint32_t lba,
				 int count, int block, const void *buf)
{
	struct ide_result r = { 0 };
	uint32_t first = ide_irqs;
	const uint8_t *p = buf;
	const char *why;
	uint8_t st;

	if (!issue(drive, command, lba, count, &st))
		return failed(r, "device not ready for a command", st);
	delay_400ns();
	st = wait_not_busy();
	if ((st & (ST_BSY | ST_DRQ | ST_ERR)) != ST_DRQ)
		return failed(r, "no DRQ for the first block", st);
	for (int done = 0; done < count; done += block) {
		int n = count - done < block ? count - done : block;

		outsw(ATA_DATA, p + done * SECTOR_BYTES, n * SECTOR_BYTES / 2);
		why = next_interrupt(first + (uint32_t)(done / block),
				     done + n < count, &st);
		r.irqs = ide_irqs - first;
		if (why)
			return failed(r, why, st);
	}
	r.ok = 1;
	r.status = st;
	return r;
}

static void identity_string(const uint16_t *words, int n, char *out)
{
	int len = 2 * n;

	/* ATA-4 IDENTIFY DEVICE: each word holds two characters, the first in bits 15-8. */
	for (int i = 0; i < n; i++) {
		out[2 * i] = (char)(words[i] >> 8);
		out[2 * i + 1] = (char)words[i];
	}
	while (len > 0 && out[len - 1] == ' ')
		len--;
	out[len] = 0;
}

/* ATA-4 IDENTIFY DEVICE: the device's parameters, as 256 words of data-in. Before
 * the command, a floating bus (0xFF) or a zero status means no device. */
struct ide_result ide_identify(int drive, struct ide_identity *id)
{
	struct ide_result r;
	uint8_t st;

	memset(id, 0, sizeof(*id));
	outb(ATA_DEVICE, DEVICE_OBSOLETE | (drive ? DEVICE_DEV : 0));
	delay_400ns();
	st = inb(ATA_ALT_STATUS);
	if (st == 0xFF || st == 0) {
		r = (struct ide_result){ 0 };
		return failed(r, "no device answers (status 0x00 or 0xff)", st);
	}
	r = pio_in(drive, CMD_IDENTIFY_DEVICE, 0, 1, 1, id->words, 0);
	if (!r.ok)
		return r;
	id->present = 1;
	identity_string(&id->words[10], 10, id->serial);
	identity_string(&id->words[23], 4, id->firmware);
	identity_string(&id->words[27], 20, id->model);
	id->lba = (id->words[49] >> 9) & 1;
	id->lba_sectors = id->words[60] | ((uint32_t)id->words[61] << 16);
	id->max_multiple = (uint8_t)id->words[47];
	return r;
}

struct ide_result ide_read_sectors(int drive, uint32_t lba, int count, void *buf)
{
	return pio_in(drive, CMD_READ_SECTORS, lba, count, 1, buf, 0);
}

/* nIEN set: the device must not assert INTRQ (ATA-4 clause 7, Device
 * Control register). Reading
 * Status at the end clears the interrupt it would have raised, so none
 * is left pending when nIEN is cleared again. */
struct ide_result ide_read_sectors_polled(int drive, uint32_t lba, int count,
					  void *buf)
{
	uint32_t before = ide_irqs;
	struct ide_result r;

	outb(ATA_DEVICE_CONTROL, DC_NIEN);
	r = pio_in(drive, CMD_READ_SECTORS, lba, count, 1, buf, 1);
	inb(ATA_STATUS);
	/* An IRQ 14 raised despite nIEN would be taken within two ticks. */
	wait_for_interrupt(&ide_irqs, before, 2);
	r.irqs = ide_irqs - before;
	outb(ATA_DEVICE_CONTROL, 0);
	return r;
}

struct ide_result ide_write_sectors(int drive, uint32_t lba, int count,
				    const void *buf)
{
	return pio_out(drive, CMD_WRITE_SECTORS, lba, count, 1, buf);
}

struct ide_result ide_read_multiple(int drive, uint32_t lba, int count,
				    int block, void *buf)
{
	return pio_in(drive, CMD_READ_MULTIPLE, lba, count, block, buf, 0);
}

struct ide_result ide_write_multiple(int drive, uint32_t lba, int count,
				     int block, const void *buf)
{
	return pio_out(drive, CMD_WRITE_MULTIPLE, lba, count, block, buf);
}

/* ATA-4 SET MULTIPLE MODE: the Sector Count register holds the block size. */
struct ide_result ide_set_multiple(int drive, int block)
{
	struct ide_result r = { 0 };
	uint32_t first = ide_irqs;
	const char *why;
	uint8_t st;

	if (!issue(drive, CMD_SET_MULTIPLE_MODE, 0, block, &st))
		return failed(r, "device not ready for a command", st);
	why = next_interrupt(first, 0, &st);
	r.irqs = ide_irqs - first;
	if (why)
		return failed(r, why, st);
	r.ok = 1;
	r.status = st;
	return r;
}
