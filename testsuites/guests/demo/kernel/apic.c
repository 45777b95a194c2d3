/*
 * apic.c: the APIC interrupt path. The local APIC (LAPIC, SDM Vol. 3A
 * chapter 10) sits in the CPU: it takes interrupts to the core, and has
 * a timer of its own. The I/O APIC (Intel 82093AA data sheet) takes the
 * device IRQ lines and sends each as a message with a vector to a LAPIC.
 *
 * Where are they? CPUID.1:EDX.APIC says whether there is a LAPIC, but
 * ringside's CPU does not report one yet, so we ask the firmware the way
 * systems did before ACPI: the Intel MultiProcessor Specification 1.4
 * tables. A "floating pointer" structure, found by scanning memory,
 * points to a configuration table that lists the processors, buses,
 * I/O APICs and how each bus IRQ is wired to an I/O APIC input pin.
 * Without a table the kernel uses the 8259A and the 8254 (pic.c).
 */
#include "kernel.h"

/* MP floating pointer structure (MP 1.4, 4.1, figure 4-2). */
struct mp_floating {
	char signature[4]; /* "_MP_" */
	uint32_t config;   /* physical address of the configuration table */
	uint8_t length;    /* in 16-byte units */
	uint8_t revision;
	uint8_t checksum;  /* all bytes sum to 0 */
	uint8_t feature1;  /* nonzero: a default configuration, no table */
	uint8_t feature2;  /* bit 7: the IMCR is present (PIC mode) */
	uint8_t reserved[3];
} __attribute__((packed));

/* MP configuration table header (MP 1.4, 4.2, figure 4-3). */
struct mp_config {
	char signature[4]; /* "PCMP" */
	uint16_t length;   /* of the header and base table entries */
	uint8_t revision;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic;    /* physical address of the local APIC */
	uint16_t extended_length;
	uint8_t extended_checksum;
	uint8_t reserved;
} __attribute__((packed));

/* Base table entries (MP 1.4, 4.3): the first byte is the type. */
#define MP_PROCESSOR 0 /* 20 bytes; the others are 8 */
#define MP_BUS 1
#define MP_IOAPIC 2
#define MP_IO_INTERRUPT 3
#define MP_LOCAL_INTERRUPT 4

struct mp_bus {
	uint8_t type, bus_id;
	char bus_type[6]; /* "ISA   ", "PCI   " */
} __attribute__((packed));

struct mp_ioapic {
	uint8_t type, id, version, flags;
	uint32_t address;
} __attribute__((packed));

struct mp_io_interrupt {
	uint8_t type, interrupt_type; /* 0: a vectored interrupt */
	uint16_t flags;               /* polarity (bits 0-1), trigger (2-3) */
	uint8_t source_bus, source_irq;
	uint8_t dest_ioapic, dest_pin;
} __attribute__((packed));

/* The BIOS data area (physical 0x400) words the scan needs. */
#define BDA_EBDA_SEGMENT 0x40E
#define BDA_BASE_MEMORY_KIB 0x413

/* The defaults of MP 1.4 chapter 5, used with a default configuration. */
#define DEFAULT_LAPIC 0xFEE00000u
#define DEFAULT_IOAPIC 0xFEC00000u

uint32_t lapic_phys, ioapic_phys;
static uint32_t mp_table_phys;
static int imcr_present;
/* How each ISA IRQ reaches the I/O APIC: its input pin, and the polarity
 * and trigger flags of its MP entry (0: as the ISA bus does it, active
 * high and edge-triggered). */
static uint8_t isa_pin[16];
static uint16_t isa_flags[16];

/* A 16-bit word of the BIOS data area. GCC takes an address in the
 * first page for a null pointer plus an offset and refuses it; the empty
 * asm hides where the pointer came from. */
static uint16_t bda_word(uint32_t address)
{
	const volatile uint16_t *p;

	asm("" : "=r"(p) : "0"(address));
	return *p;
}

static int checksum_ok(const void *p, uint32_t n)
{
	uint8_t sum = 0;

	for (uint32_t i = 0; i < n; i++)
		sum += ((const uint8_t *)p)[i];
	return sum == 0;
}

/* The structure is 16-byte aligned (MP 1.4, 4.1). */
static const struct mp_floating *scan_for_floating(uint32_t start, uint32_t len)
{
	for (uint32_t a = start; a + sizeof(struct mp_floating) <= start + len; a += 16) {
		const struct mp_floating *f = (const void *)a;

		if (memcmp(f->signature, "_MP_", 4) == 0 && f->length == 1 &&
		    checksum_ok(f, sizeof(*f)))
			return f;
	}
	return NULL;
}

/* MP 1.4, 4: search the first KiB of the extended BIOS data area, else
 * the last KiB of base memory, then the BIOS ROM at 0xF0000-0xFFFFF. */
static const struct mp_floating *find_floating(void)
{
	uint32_t ebda = bda_word(BDA_EBDA_SEGMENT) << 4;
	uint32_t base_kib = bda_word(BDA_BASE_MEMORY_KIB);
	const struct mp_floating *f = NULL;

	if (ebda)
		f = scan_for_floating(ebda, 1024);
	if (!f && base_kib >= 1)
		f = scan_for_floating(base_kib * 1024 - 1024, 1024);
	if (!f && !ebda && !base_kib) /* no BIOS data area at all */
		f = scan_for_floating(639 * 1024, 1024);
	if (!f)
		f = scan_for_floating(0xF0000, 0x10000);
	return f;
}

static void read_config_table(const struct mp_config *c)
{
	const uint8_t *entry = (const uint8_t *)(c + 1);
	int isa_bus = -1;

	lapic_phys = c->lapic;
	for (int i = 0; i < c->entry_count; i++) {
		switch (entry[0]) {
		case MP_PROCESSOR:
			entry += 20;
			continue;
		case MP_BUS: {
			const struct mp_bus *b = (const void *)entry;

			if (memcmp(b->bus_type, "ISA", 3) == 0)
				isa_bus = b->bus_id;
			break;
		}
		case MP_IOAPIC: {
			const struct mp_ioapic *io = (const void *)entry;

			/* One I/O APIC is all a PC's ISA IRQs need; take the
			 * first usable one. */
			if ((io->flags & 1) && !ioapic_phys)
				ioapic_phys = io->address;
			break;
		}
		case MP_IO_INTERRUPT: {
			const struct mp_io_interrupt *irq = (const void *)entry;

			if (irq->interrupt_type == 0 && irq->source_bus == isa_bus &&
			    irq->source_irq < 16) {
				isa_pin[irq->source_irq] = irq->dest_pin;
				isa_flags[irq->source_irq] = irq->flags;
			}
			break;
		}
		default:
			break;
		}
		entry += 8;
	}
}

/* Finds the MP tables; returns 1 if they name a LAPIC and an I/O APIC.
 * Runs before paging is on: the tables are in low memory or ROM. */
int mp_scan(void)
{
	const struct mp_floating *f = find_floating();

	/* Until a table says otherwise, ISA IRQ n arrives on pin n. */
	for (int i = 0; i < 16; i++)
		isa_pin[i] = i;
	if (!f)
		return 0;
	mp_table_phys = (uint32_t)f;
	imcr_present = f->feature2 & 0x80;
	if (f->feature1 != 0) {
		lapic_phys = DEFAULT_LAPIC;
		ioapic_phys = DEFAULT_IOAPIC;
	} else {
		const struct mp_config *c = (const void *)f->config;

		if (!f->config || memcmp(c->signature, "PCMP", 4) != 0 ||
		    !checksum_ok(c, c->length))
			return 0;
		read_config_table(c);
	}
	return lapic_phys && ioapic_phys;
}

/* ---- the local APIC (SDM Vol. 3A 10.4.1, table 10-1) ---- */

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080           /* task priority: 0 accepts everything */
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0           /* spurious vector; bit 8 enables the APIC */
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3E0
#define SVR_ENABLE 0x100
#define LVT_MASKED 0x10000
#define LVT_PERIODIC 0x20000      /* timer mode (SDM Vol. 3A 10.5.4) */
#define DIVIDE_BY_16 0x3

static uint32_t lapic_read(uint32_t reg)
{
	return *(volatile uint32_t *)(lapic_phys + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(lapic_phys + reg) = v;
}

/* Tells the LAPIC the handler is done, so it may deliver the next
 * interrupt of this priority (SDM Vol. 3A 10.8.5). */
void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

/* ---- the I/O APIC (82093AA data sheet, 3.0) ---- */

#define IOAPIC_REGSEL 0x00 /* write a register number here, */
#define IOAPIC_WINDOW 0x10 /* then read or write its value here */
#define IOAPIC_VERSION 0x01 /* bits 16-23: the number of pins - 1 */
#define IOAPIC_REDIRECTION(pin) (0x10 + 2 * (pin)) /* two registers each */
#define REDIR_ACTIVE_LOW 0x2000
#define REDIR_LEVEL 0x8000
#define REDIR_MASKED 0x10000

static uint32_t ioapic_read(uint32_t reg)
{
	*(volatile uint32_t *)(ioapic_phys + IOAPIC_REGSEL) = reg;
	return *(volatile uint32_t *)(ioapic_phys + IOAPIC_WINDOW);
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(ioapic_phys + IOAPIC_REGSEL) = reg;
	*(volatile uint32_t *)(ioapic_phys + IOAPIC_WINDOW) = v;
}

/* Sends ISA IRQ `irq` to this CPU as `vector`: fixed delivery, physical
 * destination = our LAPIC ID (82093AA 3.2.4). */
void ioapic_route(int irq, int vector)
{
	uint32_t low = vector;
	uint32_t polarity = isa_flags[irq] & 3, trigger = (isa_flags[irq] >> 2) & 3;

	if (polarity == 3)
		low |= REDIR_ACTIVE_LOW;
	if (trigger == 3)
		low |= REDIR_LEVEL;
	ioapic_write(IOAPIC_REDIRECTION(isa_pin[irq]) + 1, lapic_read(LAPIC_ID) & 0xFF000000);
	ioapic_write(IOAPIC_REDIRECTION(isa_pin[irq]), low);
}

void ioapic_mask(int irq)
{
	ioapic_write(IOAPIC_REDIRECTION(isa_pin[irq]), REDIR_MASKED);
}

/*
 * Switches from the 8259A to the APIC path. The MP tables are mapped
 * (vm.c) by now.
 */
void apic_init(void)
{
	int pins = ((ioapic_read(IOAPIC_VERSION) >> 16) & 0xFF) + 1;

	kprintf("interrupts: MP table at %p, LAPIC at %p, I/O APIC at %p "
		"with %d pins\n", mp_table_phys, lapic_phys, ioapic_phys, pins);

	/* The 8259A is remapped and masked, so a stray IRQ from it cannot
	 * pose as an exception. On boards with an IMCR, the 8259A is wired
	 * straight to the CPU until we switch the IMCR to "APIC" (MP 1.4,
	 * 3.6.2.1). */
	pic_init();
	if (imcr_present) {
		outb(0x22, 0x70);
		outb(0x23, inb(0x23) | 1);
	}

	lapic_write(LAPIC_SVR, SVR_ENABLE | T_APIC_SPURIOUS);
	lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
	lapic_write(LAPIC_TPR, 0);
	for (int pin = 0; pin < pins; pin++)
		ioapic_write(IOAPIC_REDIRECTION(pin), REDIR_MASKED);
}

static void wait_for_tick(void)
{
	uint32_t t = ticks;

	while (ticks == t)
		sti_hlt();
	cli();
}

/*
 * The LAPIC timer counts down at a rate the SDM leaves to the platform
 * (the bus or core crystal clock, 10.5.4), so we measure it against a
 * clock of known rate, the 8254: let the PIT tick at `hz` through the
 * I/O APIC, and count how far the LAPIC timer moves between two ticks.
 * The CPU halts in between (no polling), which costs nothing on an
 * emulator that skips ahead to the next timer event. Then the PIT is
 * stopped and the LAPIC timer, periodic, takes over the same vector.
 */
void lapic_timer_start(uint32_t hz)
{
	uint32_t start, per_tick;

	lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_16);
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | T_IRQ0);
	pit_start_periodic(hz);
	ioapic_route(IRQ_TIMER, T_IRQ0 + IRQ_TIMER);

	/* The first interrupt may be an old one: the I/O APIC may have
	 * latched an edge from the BIOS's PIT while the pin was masked,
	 * and delivers it as soon as we unmask. The second starts a tick. */
	wait_for_tick();
	wait_for_tick();
	lapic_write(LAPIC_TIMER_INITIAL, 0xFFFFFFFF);
	start = lapic_read(LAPIC_TIMER_CURRENT);
	wait_for_tick();
	per_tick = start - lapic_read(LAPIC_TIMER_CURRENT);

	ioapic_mask(IRQ_TIMER);
	pit_stop();
	if (per_tick == 0)
		panic("the LAPIC timer does not count");
	lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | (T_IRQ0 + IRQ_TIMER));
	lapic_write(LAPIC_TIMER_INITIAL, per_tick);
}
