/* The memory map: how much RAM the CMOS says there is, and which ranges
 * the OS must leave alone (the EBDA, the ACPI tables when acpi.c copied
 * some, the ROM, the APICs). POST writes it into the EBDA once; INT 15h
 * E820h/E801h/88h only copy from there.
 *
 * CMOS 0x30/0x31 (IBM AT): KiB of RAM above 1 MiB, saturating at 0xFFFF.
 * CMOS 0x34/0x35: 64 KiB blocks of RAM above 16 MiB (as QEMU and Bochs
 * define them), for machines with more than 16 MiB. */
#include "post.h"

enum { E820_RAM = 1, E820_RESERVED = 2 };

/* Appends one entry; the count lives in the EBDA too (the ROM has no
 * writable variables). */
static void e820_add(u32 base, u32 length, u32 type)
{
	u32 entry = EBDA_BASE + EBDA_E820_MAP + EBDA16(EBDA_E820_COUNT) * E820_ENTRY;

	PHYS32(entry + 0) = base;
	PHYS32(entry + 4) = 0;
	PHYS32(entry + 8) = length;
	PHYS32(entry + 12) = 0;
	PHYS32(entry + 16) = type;
	EBDA16(EBDA_E820_COUNT)++;
}

void memory_map_init(int acpi_tables)
{
	u32 ext_kib = cmos_read(0x30) | (u32)cmos_read(0x31) << 8;
	u32 high_64k = cmos_read(0x34) | (u32)cmos_read(0x35) << 8;
	u32 ram_end;

	/* RAM below 4 GiB ends before the IOAPIC at the latest. */
	if (high_64k > (0xFEC00000 - 0x1000000) >> 16)
		high_64k = (0xFEC00000 - 0x1000000) >> 16;
	if (high_64k)
		ram_end = 0x1000000 + (high_64k << 16);
	else
		ram_end = 0x100000 + (ext_kib << 10);

	EBDA16(EBDA_E820_COUNT) = 0;
	e820_add(0, EBDA_BASE, E820_RAM);
	e820_add(EBDA_BASE, EBDA_SIZE, E820_RESERVED);
	if (acpi_tables)
		e820_add(0xE0000, 0x10000, E820_RESERVED);	/* ACPI tables (acpi.c) */
	e820_add(BIOS_BASE, 0x10000, E820_RESERVED);
	if (ram_end > 0x100000)
		e820_add(0x100000, ram_end - 0x100000, E820_RAM);
	e820_add(0xFEC00000, 0x1000, E820_RESERVED);	/* IOAPIC */
	e820_add(0xFEE00000, 0x1000, E820_RESERVED);	/* local APIC */
	e820_add(0xFFFF0000, 0x10000, E820_RESERVED);	/* this ROM, again */

	u32 below_16m = ram_end >= 0x1000000 ? 15 * 1024 : (ram_end - 0x100000) >> 10;
	EBDA16(EBDA_E801_LOW) = below_16m;
	EBDA16(EBDA_E801_HIGH) = ram_end > 0x1000000 ? (ram_end - 0x1000000) >> 16 : 0;
	EBDA16(EBDA_EXT_KIB) = ext_kib;

	console_putdec(EBDA_BASE >> 10);
	console_puts(" KiB base memory, ");
	console_putdec((ram_end - 0x100000) >> 10);
	console_puts(" KiB extended\r\n");
}
