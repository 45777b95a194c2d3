/*
 * mptable.c: finding the interrupt hardware the way an OS did before
 * ACPI, through the Intel MultiProcessor Specification 1.4 tables.
 *
 * The BIOS leaves a 16-byte "floating pointer" structure in one of three
 * places, which an OS searches in the order of MP 1.4 section 4: the
 * first KiB of the extended BIOS data area (its segment is the BIOS data
 * area word at 0x40E), the last KiB of base memory (its size in KiB is
 * the word at 0x413), then the BIOS ROM at 0xF0000-0xFFFFF. It points to
 * a configuration table (section 4.2) whose entries list the processors
 * and their local APICs, the buses, the I/O APICs, and how each bus IRQ
 * is wired to an I/O APIC input (INTIN) and to the local APICs' LINT pins
 * (section 4.3). Every structure carries a checksum: its bytes sum to 0.
 */
#include "pc-hw.h"

/* MP floating pointer structure (MP 1.4 4.1, figure 4-2). */
struct mp_floating {
	char signature[4];      /* "_MP_" */
	uint32_t config;        /* physical address of the configuration table */
	uint8_t length;         /* in 16-byte units: 1 */
	uint8_t spec_revision;  /* 1: version 1.1, 4: version 1.4 */
	uint8_t checksum;
	uint8_t feature1;       /* nonzero: a default configuration, no table */
	uint8_t feature2;       /* bit 7: IMCR present (PIC mode) */
	uint8_t feature3_5[3];
} __attribute__((packed));

/* MP configuration table header (MP 1.4 4.2, figure 4-3). */
struct mp_config {
	char signature[4];      /* "PCMP" */
	uint16_t base_length;   /* header plus base table entries */
	uint8_t spec_revision;
	uint8_t checksum;
	char oem_id[8];
	char product_id[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic;         /* memory-mapped address of the local APICs */
	uint16_t extended_length;
	uint8_t extended_checksum; /* added to the extended entries' bytes: 0 */
	uint8_t reserved;
} __attribute__((packed));

/* Base table entry types (MP 1.4 4.3) and their lengths. */
#define MP_PROCESSOR 0          /* 20 bytes; the others are 8 */
#define MP_BUS 1
#define MP_IOAPIC 2
#define MP_IO_INTERRUPT 3
#define MP_LOCAL_INTERRUPT 4

struct mp_processor {
	uint8_t type, lapic_id, lapic_version, cpu_flags; /* EN bit 0, BP bit 1 */
	uint32_t signature, features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
	uint8_t type, bus_id;
	char bus_type[6];       /* "ISA   ", "PCI   ", ... */
} __attribute__((packed));

struct mp_ioapic {
	uint8_t type, id, version, flags; /* EN bit 0 */
	uint32_t address;
} __attribute__((packed));

/* I/O and local interrupt assignment entries share one layout (4.3.4,
 * 4.3.5); the last two bytes name an I/O APIC and INTIN#, or a local
 * APIC (0xFF: all) and LINTIN#. */
struct mp_interrupt {
	uint8_t type, interrupt_type;
	uint16_t flags;         /* PO bits 0-1, EL bits 2-3 */
	uint8_t source_bus, source_irq;
	uint8_t dest_id, dest_pin;
} __attribute__((packed));

#define BDA_EBDA_SEGMENT 0x40E
#define BDA_BASE_MEMORY_KIB 0x413

static const char *const interrupt_types[] = { "INT", "NMI", "SMI", "ExtINT" };
static const char *const polarities[] = { "conforms", "active high", "reserved",
					  "active low" };
static const char *const triggers[] = { "conforms", "edge", "reserved", "level" };

/* A 16-bit word of the BIOS data area. GCC sees an address in the first
 * page as a null pointer plus an offset and warns; the empty asm hides
 * where the pointer came from. */
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

static void print_fixed(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		kprintf("%c", s[i] >= 0x20 && s[i] < 0x7F ? s[i] : '?');
}

/* The structure starts on a 16-byte boundary (MP 1.4 4.1). */
static uint32_t scan(uint32_t start, uint32_t length)
{
	for (uint32_t a = start; a + 16 <= start + length; a += 16) {
		const struct mp_floating *f = (const void *)a;

		if (memcmp(f->signature, "_MP_", 4) == 0 && f->length >= 1 &&
		    checksum_ok(f, f->length * 16u))
			return a;
	}
	return 0;
}

static void find_floating(struct mp_info *mp, uint32_t base_memory_kib)
{
	uint32_t ebda = (uint32_t)bda_word(BDA_EBDA_SEGMENT) << 4;
	uint32_t base_kib = bda_word(BDA_BASE_MEMORY_KIB);
	uint32_t last_kib;

	kprintf("    BIOS data area: EBDA segment %#x, base memory %u KiB\n",
		ebda >> 4, base_kib);
	if (ebda) {
		mp->floating = scan(ebda, 1024);
		mp->found_in = "the first KiB of the EBDA";
		if (mp->floating)
			return;
	}
	if (base_kib == 0) {
		/* Booted by a Multiboot loader without a BIOS: the loader's
		 * mem_lower is the other source of the same number. */
		base_kib = base_memory_kib;
		kprintf("    base memory from the Multiboot information: %u KiB\n",
			base_kib);
	}
	last_kib = base_kib ? base_kib * 1024 - 1024 : 0;
	if (last_kib && last_kib != ebda) {
		mp->floating = scan(last_kib, 1024);
		mp->found_in = "the last KiB of base memory";
		if (mp->floating)
			return;
	}
	mp->floating = scan(0xF0000, 0x10000);
	mp->found_in = "the BIOS ROM area 0xf0000-0xfffff";
}

static void print_interrupt(const struct mp_interrupt *e, int local)
{
	kprintf("    %s interrupt %s: bus %u IRQ %u -> ", local ? "local" : "I/O",
		interrupt_types[e->interrupt_type & 3], e->source_bus,
		e->source_irq);
	if (local)
		kprintf("LAPIC %#x LINT%u", e->dest_id, e->dest_pin);
	else
		kprintf("I/O APIC %u pin %u", e->dest_id, e->dest_pin);
	kprintf(" (%s, %s)\n", polarities[e->flags & 3], triggers[(e->flags >> 2) & 3]);
}

/* Walks the base table entries (MP 1.4 4.3), printing each. Entries come
 * sorted by type, but an I/O interrupt entry names its bus by ID, so the
 * ISA routes are resolved once every bus is known. */
static void read_entries(struct mp_info *mp, const struct mp_config *c)
{
	const uint8_t *entry = (const uint8_t *)(c + 1);
	const uint8_t *end = (const uint8_t *)c + c->base_length;
	const struct mp_interrupt *io[64];
	int n_io = 0;

	for (int i = 0; i < c->entry_count; i++) {
		uint32_t size = entry[0] == MP_PROCESSOR ? 20 : 8;

		if (entry + size > end || entry[0] > MP_LOCAL_INTERRUPT) {
			kprintf("    entry %d: type %u at %p does not fit the table\n",
				i, entry[0], (uint32_t)entry);
			mp->config_ok = 0;
			break;
		}
		switch (entry[0]) {
		case MP_PROCESSOR: {
			const struct mp_processor *p = (const void *)entry;

			kprintf("    processor: LAPIC ID %u version %#x%s%s, "
				"signature %#x, features %#x\n",
				p->lapic_id, p->lapic_version,
				p->cpu_flags & 1 ? ", enabled" : ", disabled",
				p->cpu_flags & 2 ? ", bootstrap" : "", p->signature,
				p->features);
			mp->processors++;
			if ((p->cpu_flags & 3) == 3) {
				mp->bsp_lapic_id = p->lapic_id;
				mp->bsp_lapic_version = p->lapic_version;
				mp->bsp_signature = p->signature;
				mp->bsp_features = p->features;
			}
			break;
		}
		case MP_BUS: {
			const struct mp_bus *b = (const void *)entry;

			kprintf("    bus %u: \"", b->bus_id);
			print_fixed(b->bus_type, 6);
			kprintf("\"\n");
			if (memcmp(b->bus_type, "ISA   ", 6) == 0)
				mp->isa_bus = b->bus_id;
			break;
		}
		case MP_IOAPIC: {
			const struct mp_ioapic *a = (const void *)entry;

			kprintf("    I/O APIC ID %u version %#x at %p%s\n", a->id,
				a->version, a->address,
				a->flags & 1 ? "" : ", disabled");
			mp->ioapics++;
			if ((a->flags & 1) && !mp->ioapic) {
				mp->ioapic = a->address;
				mp->ioapic_id = a->id;
				mp->ioapic_version = a->version;
			}
			break;
		}
		case MP_IO_INTERRUPT:
			print_interrupt((const void *)entry, 0);
			mp->io_interrupts++;
			if (n_io < (int)ARRAY_SIZE(io))
				io[n_io++] = (const void *)entry;
			break;
		case MP_LOCAL_INTERRUPT:
			print_interrupt((const void *)entry, 1);
			mp->local_interrupts++;
			break;
		}
		entry += size;
	}

	for (int i = 0; i < n_io; i++) {
		const struct mp_interrupt *e = io[i];
		struct irq_route *r;

		if (e->interrupt_type != 0 || e->source_bus != mp->isa_bus ||
		    e->source_irq >= 16)
			continue;
		r = &mp->isa_irq[e->source_irq];
		r->found = 1;
		r->ioapic_id = e->dest_id;
		r->pin = e->dest_pin;
		r->flags = e->flags;
	}
}

/* Extended entries (MP 1.4 4.4, types 128 and up) carry their own
 * length in byte 1; we only count them. */
static void read_extended(struct mp_info *mp, const struct mp_config *c)
{
	const uint8_t *entry = (const uint8_t *)c + c->base_length;
	const uint8_t *end = entry + c->extended_length;
	uint8_t sum = c->extended_checksum;

	for (const uint8_t *p = entry; p < end; p++)
		sum += *p;
	if (sum != 0) {
		kprintf("    extended table checksum is wrong\n");
		mp->config_ok = 0;
	}
	while (entry + 2 <= end && entry[1] >= 2) {
		mp->extended_entries++;
		entry += entry[1];
	}
}

void mp_scan(struct mp_info *mp, uint32_t base_memory_kib)
{
	const struct mp_floating *f;
	const struct mp_config *c;

	memset(mp, 0, sizeof(*mp));
	mp->bsp_lapic_id = -1;
	mp->isa_bus = -1;
	find_floating(mp, base_memory_kib);
	if (!mp->floating) {
		kprintf("    no MP floating pointer anywhere\n");
		return;
	}
	f = (const void *)mp->floating;
	mp->default_config = f->feature1;
	mp->imcr_present = (f->feature2 & 0x80) != 0;
	kprintf("    MP floating pointer at %p, in %s: spec 1.%u, table at %p, "
		"features %#x %#x\n", mp->floating, mp->found_in,
		f->spec_revision, f->config, f->feature1, f->feature2);
	if (mp->default_config || !f->config)
		return;

	c = (const void *)f->config;
	mp->config_ok = memcmp(c->signature, "PCMP", 4) == 0 &&
			c->base_length >= sizeof(*c) &&
			checksum_ok(c, c->base_length);
	if (!mp->config_ok) {
		kprintf("    no valid configuration table at %p\n", f->config);
		return;
	}
	mp->lapic = c->lapic;
	kprintf("    configuration table: spec 1.%u, OEM \"", c->spec_revision);
	print_fixed(c->oem_id, 8);
	kprintf("\" product \"");
	print_fixed(c->product_id, 12);
	kprintf("\", %u entries in %u bytes (+%u extended), LAPIC at %p\n",
		c->entry_count, c->base_length, c->extended_length, c->lapic);
	read_entries(mp, c);
	read_extended(mp, c);
}
