/*
 * pc-hw: an operating system's view of a 1990s PC, written from the
 * hardware specifications alone, to show that a guest which knows
 * nothing about ringside boots on it as on any PC. Apart from COM1
 * output and the debug-exit port it uses no emulator conventions.
 *
 *   1. The Intel MP 1.4 tables, found by the specification's scan.
 *   2. The 8259As masked; the local APIC enabled; the I/O APIC routing
 *      ISA IRQ 4 (COM1) and IRQ 14 (IDE) to pins the MP table names; the
 *      local APIC timer calibrated against 8254 channel 2 and running
 *      periodically.
 *   3. ATA PIO on the primary channel: IDENTIFY DEVICE on master and
 *      slave; on the slave WRITE SECTORS, READ SECTORS, SET MULTIPLE
 *      MODE, WRITE MULTIPLE and READ MULTIPLE, an IRQ 14 per block, and
 *      one READ SECTORS polled with nIEN set, which must raise none.
 *   4. A line of console input taken from the 16550A by IRQ 4, checked
 *      against `expect=WORD` on the Multiboot command line.
 *
 * Run it with two disks (1 MiB images of any contents will do; sectors
 * 64-74 of the slave are overwritten) and `WORD` typed on COM1; see
 * README.md.
 */
#include "pc-hw.h"

/* The sectors of the slave this guest writes: four by WRITE SECTORS,
 * seven by WRITE MULTIPLE, read back by READ MULTIPLE in blocks of
 * four, so the last block is a partial one (ATA-4 READ MULTIPLE). */
#define TEST_LBA 64
#define SECTORS_COUNT 4
#define MULTIPLE_COUNT 7
#define TOTAL_SECTORS (SECTORS_COUNT + MULTIPLE_COUNT)
#define MULTIPLE_BLOCK 4
#define SECTOR_MAGIC 0x57484350 /* "PCHW" */

#define PIT_COUNTS_10MS (PIT_HZ / TIMER_HZ)
#define CONSOLE_TIMEOUT_TICKS (60 * TIMER_HZ)

/* Multiboot information (Multiboot 0.6.96, 3.3): flags, mem_lower,
 * mem_upper, boot_device, cmdline. */
struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};
#define MB_INFO_MEMORY 0x01
#define MB_INFO_CMDLINE 0x04

static int checks_passed;

/* Prints "  n NAME ... ok", or FAIL and exits with status n. */
static void check(const char *name, int passed)
{
	int n = checks_passed + 1;

	kprintf("%3d %s ... %s\n", n, name, passed ? "ok" : "FAIL");
	if (!passed) {
		kprintf("pc-hw: check %d failed\n", n);
		guest_exit((uint8_t)n);
	}
	checks_passed = n;
}

/* As check(), and on failure first prints what was expected and observed. */
static void check_eq(const char *name, uint32_t expected, uint32_t observed)
{
	if (expected != observed)
		kprintf("    %s: expected %#x, observed %#x\n", name, expected,
			observed);
	check(name, expected == observed);
}

/* An IDE command's outcome: what failed, and the status it ended with. */
static void check_ide(const char *name, struct ide_result r,
		      uint32_t expected_irqs)
{
	if (!r.ok)
		kprintf("    %s: status %#x error %#x, %u IRQ 14s\n", r.failure,
			r.status, r.error, r.irqs);
	else if (r.irqs != expected_irqs)
		kprintf("    expected %u IRQ 14s, observed %u\n", expected_irqs,
			r.irqs);
	check(name, r.ok && r.irqs == expected_irqs);
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

/* Finds `expect=WORD` among the space-separated words of the command
 * line (QEMU puts the kernel's file name first). */
static void read_cmdline(const struct multiboot_info *mbi, char *expected, int size)
{
	const char *p;

	expected[0] = 0;
	if (!(mbi->flags & MB_INFO_CMDLINE)) {
		kprintf("    no Multiboot command line\n");
		return;
	}
	p = (const char *)mbi->cmdline;
	kprintf("    command line: \"%s\"\n", p);
	while (*p) {
		while (*p == ' ')
			p++;
		if (p[0] == 'e' && p[1] == 'x' && p[2] == 'p' && p[3] == 'e' &&
		    p[4] == 'c' && p[5] == 't' && p[6] == '=') {
			int n = 0;

			for (p += 7; *p && *p != ' ' && n < size - 1; p++)
				expected[n++] = *p;
			expected[n] = 0;
			return;
		}
		while (*p && *p != ' ')
			p++;
	}
}

/* ---- 1. the MP tables ---- */

/* MP 1.4 4.3.1, table 4-4: the processor entry's CPU signature is
 * CPUID.1:EAX's stepping, model and family, and its feature flags are
 * CPUID.1:EDX. */
static void check_processor_entry(const struct mp_info *mp)
{
	uint32_t a, b, c, d;

	cpuid(1, &a, &b, &c, &d);
	kprintf("    CPUID.1: signature %#x, features %#x\n", a & 0xFFF, d);
	check_eq("MP processor entry: CPU signature is CPUID.1:EAX[11:0]",
		 a & 0xFFF, mp->bsp_signature);
	check_eq("MP processor entry: feature flags are CPUID.1:EDX", d,
		 mp->bsp_features);
}

static void check_mp_tables(struct mp_info *mp, uint32_t base_memory_kib)
{
	const struct irq_route *com1, *ide;

	kprintf("MP tables\n");
	mp_scan(mp, base_memory_kib);
	check("MP floating pointer found by the MP 1.4 scan, checksum valid",
	      mp->floating != 0);
	if (mp->default_config)
		kprintf("    default configuration %u: no table to read\n",
			mp->default_config);
	check("MP configuration table \"PCMP\": base and extended checksums valid",
	      mp->config_ok);
	kprintf("    %d processors, %d I/O APICs, %d I/O and %d local interrupt "
		"entries, %d extended entries\n", mp->processors, mp->ioapics,
		mp->io_interrupts, mp->local_interrupts, mp->extended_entries);
	check("MP table lists a bootstrap processor, an ISA bus, an I/O APIC",
	      mp->bsp_lapic_id >= 0 && mp->isa_bus >= 0 && mp->ioapic != 0);
	check_processor_entry(mp);

	com1 = &mp->isa_irq[IRQ_COM1];
	ide = &mp->isa_irq[IRQ_IDE];
	if (com1->found)
		kprintf("    ISA IRQ 4 -> I/O APIC %u pin %u\n", com1->ioapic_id, com1->pin);
	if (ide->found)
		kprintf("    ISA IRQ 14 -> I/O APIC %u pin %u\n", ide->ioapic_id, ide->pin);
	check("MP I/O interrupt entries route ISA IRQ 4 and IRQ 14 to this I/O APIC",
	      com1->found && ide->found &&
		      (com1->ioapic_id == mp->ioapic_id || com1->ioapic_id == 0xFF) &&
		      (ide->ioapic_id == mp->ioapic_id || ide->ioapic_id == 0xFF));
}

/* ---- 2. the interrupt controllers ---- */

static void route(const struct mp_info *mp, int irq, int vector, uint8_t dest)
{
	uint64_t readback;
	uint32_t low = ioapic_route(mp->ioapic, &mp->isa_irq[irq], vector, dest,
				    &readback);
	uint64_t written = ((uint64_t)dest << 56) | low;

	kprintf("    IRQ %d: pin %u redirection entry %08x%08x\n", irq,
		mp->isa_irq[irq].pin, (uint32_t)(readback >> 32), (uint32_t)readback);
	check(irq == IRQ_COM1
		      ? "IRQ 4 redirection entry reads back as written, unmasked"
		      : "IRQ 14 redirection entry reads back as written, unmasked",
	      readback == written);
}

static void check_interrupt_controllers(const struct mp_info *mp)
{
	uint32_t a, b, c, d, id, version, ioapic_id, ioapic_version, pins;

	kprintf("interrupt controllers\n");
	pic_mask_all();
	if (mp->imcr_present)
		imcr_select_apic();
	cpuid(1, &a, &b, &c, &d);
	kprintf("    8259As moved to vectors %#x-%#x%s; CPUID.1:EDX.APIC = %u\n",
		VEC_PIC_BASE, VEC_PIC_BASE + 15,
		mp->imcr_present ? ", IMCR set to APIC mode" : "", (d >> 9) & 1);
	check_eq("8259A pair masked: both IMRs read back 0xff", 0xFFFF, pic_masks());

	lapic_enable(mp->lapic);
	id = lapic_id();
	version = lapic_version();
	kprintf("    local APIC ID %u, version %#x, %u LVT entries\n", id,
		version & 0xFF, ((version >> 16) & 0xFF) + 1);
	check_eq("local APIC ID matches the MP table's bootstrap processor",
		 (uint32_t)mp->bsp_lapic_id, id);
	check_eq("local APIC version register bits 7-0 match the MP table",
		 mp->bsp_lapic_version, version & 0xFF);

	ioapic_id = (ioapic_id_register(mp->ioapic) >> 24) & 0x0F;
	ioapic_version = ioapic_version_register(mp->ioapic);
	pins = ((ioapic_version >> 16) & 0xFF) + 1;
	/* The version is printed, not checked: MP 1.4 table 4-7 wants the
	 * entry to hold the register's bits 7-0, but SeaBIOS names the
	 * 82093AA's 0x11 for QEMU's I/O APIC, version 0x20. */
	kprintf("    I/O APIC ID %u, version %#x (MP table: %#x), %u pins\n",
		ioapic_id, ioapic_version & 0xFF, mp->ioapic_version, pins);
	check_eq("I/O APIC ID register matches the MP table", mp->ioapic_id,
		 ioapic_id);
	check("I/O APIC has a pin for IRQ 4 and IRQ 14",
	      mp->isa_irq[IRQ_COM1].pin < pins && mp->isa_irq[IRQ_IDE].pin < pins);

	ioapic_mask_all(mp->ioapic, (int)pins);
	route(mp, IRQ_COM1, VEC_COM1, (uint8_t)id);
	route(mp, IRQ_IDE, VEC_IDE, (uint8_t)id);
}

/* ---- the LAPIC timer ---- */

static void check_timer(void)
{
	uint32_t per_tick, current, start;
	int ticks;

	kprintf("local APIC timer\n");
	per_tick = lapic_timer_calibrate(PIT_COUNTS_10MS);
	kprintf("    %u counts (divide by 16) in 10 ms of PIT channel 2: "
		"timer input %u MHz\n", per_tick, per_tick * 16 / 10000);
	check("LAPIC timer calibrated against PIT channel 2 (port 0x61 gate, OUT)",
	      per_tick > 0 && per_tick < 0x80000000u);

	lapic_timer_periodic(per_tick);
	/* 4.5 periods, so neither end of the window lands on a tick. */
	ticks = ticks_during_pit(PIT_COUNTS_10MS * 9 / 2);
	kprintf("    %d timer interrupts while PIT channel 2 counted 45 ms\n", ticks);
	check("LAPIC timer periodic at 100 Hz: 4 (+-1) interrupts in 45 ms",
	      ticks >= 3 && ticks <= 5);

	start = timer_ticks;
	while (timer_ticks - start < 10)
		wait_for_interrupt(&timer_ticks, timer_ticks, 1);
	current = lapic_timer_current();
	kprintf("    10 more ticks taken in HLT; current count %u of %u\n",
		current, per_tick);
	check("LAPIC timer wakes HLT 10 times, current count within the period",
	      current <= per_tick);
}

/* ---- 3. the IDE disks ---- */

static uint8_t written[TOTAL_SECTORS * SECTOR_BYTES];
static uint8_t readback[TOTAL_SECTORS * SECTOR_BYTES];
static uint8_t master_before[SECTOR_BYTES], master_after[SECTOR_BYTES];

/* Each sector names itself (magic, generation, LBA) and is filled from
 * those; the generation is one more than what the disk held, so every
 * run writes data the disk did not hold before. */
static void fill_sector(uint8_t *sector, uint32_t generation, uint32_t lba)
{
	uint32_t *w = (uint32_t *)sector;

	w[0] = SECTOR_MAGIC;
	w[1] = generation;
	w[2] = lba;
	for (int i = 3; i < SECTOR_BYTES / 4; i++)
		w[i] = (lba * 0x9E3779B1u) ^ ((uint32_t)i * 0x85EBCA77u) ^
		       (generation * 0xC2B2AE3Du);
}

static void print_identity(const char *which, const struct ide_identity *id)
{
	kprintf("    %s: \"%s\" serial \"%s\" firmware \"%s\", %s%u sectors, "
		"READ/WRITE MULTIPLE up to %u\n", which, id->model, id->serial,
		id->firmware, id->lba ? "LBA, " : "no LBA, ", id->lba_sectors,
		id->max_multiple);
}

static void check_ide_disks(void)
{
	struct ide_identity master, slave;
	struct ide_result r;
	uint32_t generation = 1;
	int block;

	kprintf("IDE, primary channel, PIO by IRQ 14\n");
	ide_interrupts_on();
	r = ide_identify(IDE_MASTER, &master);
	if (master.present)
		print_identity("master", &master);
	check_ide("IDENTIFY DEVICE on the master: one IRQ 14, 256 words", r, 1);
	r = ide_identify(IDE_SLAVE, &slave);
	if (slave.present)
		print_identity("slave", &slave);
	check_ide("IDENTIFY DEVICE on the slave (device 1, 0xB0): one IRQ 14", r, 1);
	check("slave supports LBA and holds the test sectors",
	      slave.lba && slave.lba_sectors >= TEST_LBA + TOTAL_SECTORS);

	check_ide("master: READ SECTORS of the test LBA",
		  ide_read_sectors(IDE_MASTER, TEST_LBA, 1, master_before), 1);
	check_ide("slave: READ SECTORS, 4 sectors, an IRQ 14 each",
		  ide_read_sectors(IDE_SLAVE, TEST_LBA, SECTORS_COUNT, readback),
		  SECTORS_COUNT);
	if (((uint32_t *)readback)[0] == SECTOR_MAGIC)
		generation = ((uint32_t *)readback)[1] + 1;
	kprintf("    writing generation %u at LBA %u-%u of the slave\n",
		generation, TEST_LBA, TEST_LBA + TOTAL_SECTORS - 1);
	for (int i = 0; i < TOTAL_SECTORS; i++)
		fill_sector(written + i * SECTOR_BYTES, generation, TEST_LBA + i);

	check_ide("slave: WRITE SECTORS, 4 sectors, an IRQ 14 after each",
		  ide_write_sectors(IDE_SLAVE, TEST_LBA, SECTORS_COUNT, written),
		  SECTORS_COUNT);
	memset(readback, 0, sizeof(readback));
	check_ide("slave: READ SECTORS reads them back, an IRQ 14 each",
		  ide_read_sectors(IDE_SLAVE, TEST_LBA, SECTORS_COUNT, readback),
		  SECTORS_COUNT);
	check("slave: the sectors read back are the sectors written",
	      memcmp(readback, written, SECTORS_COUNT * SECTOR_BYTES) == 0);
	memset(readback, 0, sizeof(readback));
	check_ide("slave: READ SECTORS with nIEN set, polled: no IRQ 14",
		  ide_read_sectors_polled(IDE_SLAVE, TEST_LBA, 2, readback), 0);
	check("slave: the polled read returns the same sectors",
	      memcmp(readback, written, 2 * SECTOR_BYTES) == 0);

	block = slave.max_multiple < MULTIPLE_BLOCK ? slave.max_multiple : MULTIPLE_BLOCK;
	kprintf("    multiple mode block: %d sectors\n", block);
	check("slave allows READ/WRITE MULTIPLE blocks (IDENTIFY word 47)", block > 0);
	check_ide("slave: SET MULTIPLE MODE, one IRQ 14",
		  ide_set_multiple(IDE_SLAVE, block), 1);
	check_ide("slave: WRITE MULTIPLE, 7 sectors, an IRQ 14 per block",
		  ide_write_multiple(IDE_SLAVE, TEST_LBA + SECTORS_COUNT,
				     MULTIPLE_COUNT,
				     block, written + SECTORS_COUNT * SECTOR_BYTES),
		  (MULTIPLE_COUNT + block - 1) / block);
	memset(readback, 0, sizeof(readback));
	check_ide("slave: READ MULTIPLE, 11 sectors, an IRQ 14 per block",
		  ide_read_multiple(IDE_SLAVE, TEST_LBA, TOTAL_SECTORS, block, readback),
		  (TOTAL_SECTORS + block - 1) / block);
	check("slave: READ MULTIPLE returns all 11 sectors written",
	      memcmp(readback, written, sizeof(written)) == 0);

	check_ide("master: READ SECTORS of the test LBA again",
		  ide_read_sectors(IDE_MASTER, TEST_LBA, 1, master_after), 1);
	check("master's sector is unchanged by the writes to the slave",
	      memcmp(master_before, master_after, SECTOR_BYTES) == 0);
}

/* ---- 4. console input ---- */

static void check_console(const char *expected)
{
	char line[80];
	int len;

	kprintf("COM1 input by IRQ 4\n");
	kprintf("    type \"%s\" and Enter\n", expected);
	len = uart_read_line(line, sizeof(line), CONSOLE_TIMEOUT_TICKS);
	if (len >= 0)
		kprintf("    echo: %s\n", line);
	kprintf("    %u IRQ 4s carried %u bytes; %u byte(s) were waiting at start\n",
		uart_irqs, uart_irq_bytes, uart_early_bytes);
	check("a line arrives on COM1, delivered by IRQ 4",
	      len >= 0 && uart_irq_bytes > 0);
	if (!expected[0])
		kprintf("    no expect=WORD on the command line\n");
	check("the line equals expect= from the command line",
	      expected[0] && streq(line, expected));
}

int guest_main(void)
{
	const struct multiboot_info *mbi = (const void *)multiboot_info;
	uint32_t base_memory_kib = mbi->flags & MB_INFO_MEMORY ? mbi->mem_lower : 0;
	struct mp_info mp;
	char expected[64];

	kprintf("pc-hw: start\n");
	read_cmdline(mbi, expected, sizeof(expected));
	check_mp_tables(&mp, base_memory_kib);
	check_interrupt_controllers(&mp);

	/* Before the first HLT, so input that arrives while we wait for
	 * other interrupts lands in the FIFO and the ring buffer. */
	kprintf("COM1\n");
	check_eq("COM1 is a 16550A: IIR bits 7-6 = 11 with the FIFOs on", 0xC0,
		 uart_start() & 0xC0);
	uart_enable_interrupt();

	check_timer();
	check_ide_disks();
	check_console(expected);
	kprintf("pc-hw: %d passed, 0 failed\n", checks_passed);
	return 0;
}
