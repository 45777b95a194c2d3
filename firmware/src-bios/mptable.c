/* Intel MultiProcessor Specification 1.4 tables (chapter 4) for a
 * uniprocessor with an xAPIC and one IOAPIC, built in the first KiB of
 * the EBDA, where section 4 says an OS looks first.
 *
 * The floating pointer (4.1) points at the configuration table (4.2):
 * one processor (the BSP, LAPIC ID 0), one ISA bus, the IOAPIC (ID 1, at
 * 0xFEC00000), where each ISA IRQ enters the IOAPIC, and LINT0/LINT1
 * wired as ExtINT/NMI (the virtual-wire mode of 3.6.2.2 that the 8259s
 * use until the OS switches to the IOAPIC). The APIC versions in the
 * table are what the chips' version registers report (0x14 and 0x11 if
 * a register reads as nothing). A CPU whose CPUID reports no local APIC
 * gets no tables. */
#include "post.h"

#define LAPIC_BASE   0xFEE00000
#define LAPIC_VERSION_REG (LAPIC_BASE + 0x30)
#define IOAPIC_BASE  0xFEC00000
#define IOAPIC_ID    1
/* Used when a version register reads as nothing (0 or all ones). */
#define LAPIC_VERSION_DEFAULT 0x14
#define IOAPIC_VERSION_DEFAULT 0x11

enum { ENTRY_PROCESSOR = 0, ENTRY_BUS = 1, ENTRY_IOAPIC = 2, ENTRY_IO_INT = 3, ENTRY_LOCAL_INT = 4 };
enum { INT_TYPE_INT = 0, INT_TYPE_NMI = 1, INT_TYPE_EXTINT = 3 };

/* IOAPIC registers are reached through an index (IOREGSEL, at its base)
 * and a window (IOWIN, base + 0x10): 82093AA data sheet, 3.0. */
static u32 ioapic_read(u32 reg)
{
	PHYS32(IOAPIC_BASE) = reg;
	return PHYS32(IOAPIC_BASE + 0x10);
}

static void ioapic_write(u32 reg, u32 value)
{
	PHYS32(IOAPIC_BASE) = reg;
	PHYS32(IOAPIC_BASE + 0x10) = value;
}

static u8 version_or(u32 reg_value, u8 fallback)
{
	u8 version = reg_value & 0xFF;
	return version == 0 || version == 0xFF ? fallback : version;
}

static void put8(u32 *at, u8 v)
{
	PHYS8(*at) = v;
	*at += 1;
}

static void put16(u32 *at, u16 v)
{
	PHYS16(*at) = v;
	*at += 2;
}

static void put32(u32 *at, u32 v)
{
	PHYS32(*at) = v;
	*at += 4;
}

static void put_chars(u32 *at, const char *s, u32 len)
{
	for (u32 i = 0; i < len; i++)
		put8(at, s[i]);
}

/* The byte that makes `len` bytes from `addr` sum to 0. */
static u8 checksum(u32 addr, u32 len)
{
	u8 sum = 0;
	for (u32 i = 0; i < len; i++)
		sum += PHYS8(addr + i);
	return -sum;
}

/* Table 4-7: an I/O interrupt assignment entry, flags 0 = conforms to the
 * bus (ISA: edge triggered, active high). */
static void put_io_int(u32 *at, u8 type, u8 bus_irq, u8 pin)
{
	put8(at, ENTRY_IO_INT);
	put8(at, type);
	put16(at, 0);
	put8(at, 0);		/* source bus: ISA, bus ID 0 */
	put8(at, bus_irq);
	put8(at, IOAPIC_ID);
	put8(at, pin);
}

/* Table 4-9: a local interrupt assignment entry, to every local APIC. */
static void put_local_int(u32 *at, u8 type, u8 lint)
{
	put8(at, ENTRY_LOCAL_INT);
	put8(at, type);
	put16(at, 0);
	put8(at, 0);
	put8(at, 0);
	put8(at, 0xFF);
	put8(at, lint);
}

void mptable_init(void)
{
	u32 table = EBDA_BASE + EBDA_MP_CONFIG;
	u32 at = table + 44;	/* entries follow the 44-byte header */
	u32 entries = 0;
	u32 signature, features, ebx, ecx;

	__asm__ volatile("cpuid" : "=a"(signature), "=b"(ebx), "=c"(ecx), "=d"(features) : "a"(1));
	if (!(features & (1 << 9)))
		return;		/* no local APIC: no MP tables to describe it */

	/* The MP spec leaves APIC IDs to the BIOS: give the IOAPIC the ID
	 * the table names (its ID register, bits 27-24). */
	ioapic_write(0, IOAPIC_ID << 24);
	u8 lapic_version = version_or(PHYS32(LAPIC_VERSION_REG), LAPIC_VERSION_DEFAULT);
	u8 ioapic_version = version_or(ioapic_read(1), IOAPIC_VERSION_DEFAULT);

	/* Table 4-4: the processor. */
	put8(&at, ENTRY_PROCESSOR);
	put8(&at, 0);		/* local APIC ID */
	put8(&at, lapic_version);
	put8(&at, 0x03);	/* CPU flags: EN (usable), BP (bootstrap) */
	put32(&at, signature & 0xFFF);	/* stepping, model, family */
	put32(&at, features);
	put32(&at, 0);
	put32(&at, 0);
	entries++;

	/* Table 4-5: the ISA bus. */
	put8(&at, ENTRY_BUS);
	put8(&at, 0);
	put_chars(&at, "ISA   ", 6);
	entries++;

	/* Table 4-6: the IOAPIC. */
	put8(&at, ENTRY_IOAPIC);
	put8(&at, IOAPIC_ID);
	put8(&at, ioapic_version);
	put8(&at, 0x01);	/* EN */
	put32(&at, IOAPIC_BASE);
	entries++;

	/* ISA IRQ 0 (the PIT) enters the IOAPIC on pin 2; the others on the
	 * pin of their number. IRQ 2 has no entry: on the ISA bus it is the
	 * 8259 cascade, no device raises it, and pin 2 is IRQ 0's. */
	for (u32 irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		put_io_int(&at, INT_TYPE_INT, irq, irq == 0 ? 2 : irq);
		entries++;
	}

	put_local_int(&at, INT_TYPE_EXTINT, 0);
	put_local_int(&at, INT_TYPE_NMI, 1);
	entries += 2;

	/* Table 4-2: the header. */
	u32 length = at - table;
	at = table;
	put_chars(&at, "PCMP", 4);
	put16(&at, length);
	put8(&at, 4);		/* specification revision 1.4 */
	put8(&at, 0);		/* checksum, below */
	put_chars(&at, "RINGSIDE", 8);
	put_chars(&at, "IA-32 PC    ", 12);
	put32(&at, 0);		/* no OEM table */
	put16(&at, 0);
	put16(&at, entries);
	put32(&at, LAPIC_BASE);
	put16(&at, 0);		/* no extended entries */
	put8(&at, 0);
	put8(&at, 0);
	PHYS8(table + 7) = checksum(table, length);

	/* Table 4-1: the floating pointer, 16 bytes on a 16-byte boundary. */
	u32 mpf = EBDA_BASE + EBDA_MP_FLOAT;
	at = mpf;
	put_chars(&at, "_MP_", 4);
	put32(&at, table);
	put8(&at, 1);		/* length in 16-byte units */
	put8(&at, 4);		/* revision 1.4 */
	put8(&at, 0);		/* checksum, below */
	put8(&at, 0);		/* feature 1: 0 = the configuration table is present */
	put32(&at, 0);		/* feature 2-5: IMCR absent, virtual wire */
	PHYS8(mpf + 10) = checksum(mpf, 16);
}
