/* ACPI tables, from the machine through QEMU's fw_cfg interface (legacy
 * I/O ports: a 16-bit selector written to 0x510, the item read a byte at
 * a time from 0x511; QEMU's docs/specs/fw_cfg.rst), as SeaBIOS gets its
 * tables from QEMU. ringside's machine lays the tables out for 0xE0000
 * and publishes them as the file "etc/ringside/acpi"; POST copies them
 * there at every boot, where an OS's RSDP scan of 0xE0000-0xFFFFF finds
 * them (ACPI 2.0, 5.2.4.1), and the memory map reserves the 64 KiB.
 * Without fw_cfg, or without the file (another machine, `devices.acpi`
 * off), there are no tables. */
#include "post.h"

#define FW_CFG_SEL      0x510
#define FW_CFG_DATA     0x511
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_FILE_DIR 0x0019
#define ACPI_BASE       0xE0000
#define ACPI_MAX        0x10000

static void fw_cfg_select(u16 key)
{
	__asm__ volatile("outw %0, %1" : : "a"(key), "Nd"((u16)FW_CFG_SEL));
}

static u8 fw_cfg_byte(void)
{
	return inb(FW_CFG_DATA);
}

/* A big-endian number of `n` bytes from the selected item. */
static u32 fw_cfg_be(u32 n)
{
	u32 v = 0;
	for (u32 i = 0; i < n; i++)
		v = v << 8 | fw_cfg_byte();
	return v;
}

static int name_is(const char *name, const char *want)
{
	u32 i = 0;
	for (; want[i]; i++)
		if (name[i] != want[i])
			return 0;
	return name[i] == 0;
}

/* Copy the ACPI tables to 0xE0000; returns 1 when there were some. */
int acpi_init(void)
{
	fw_cfg_select(FW_CFG_SIGNATURE);
	if (fw_cfg_byte() != 'Q' || fw_cfg_byte() != 'E' || fw_cfg_byte() != 'M' || fw_cfg_byte() != 'U')
		return 0;
	fw_cfg_select(FW_CFG_FILE_DIR);
	u32 count = fw_cfg_be(4);
	for (u32 f = 0; f < count && f < 0x1000; f++) {
		u32 size = fw_cfg_be(4);
		u16 select = fw_cfg_be(2);
		char name[56];
		fw_cfg_be(2);
		for (u32 i = 0; i < sizeof(name); i++)
			name[i] = fw_cfg_byte();
		if (!name_is(name, "etc/ringside/acpi") || size > ACPI_MAX)
			continue;
		fw_cfg_select(select);
		for (u32 i = 0; i < size; i++)
			PHYS8(ACPI_BASE + i) = fw_cfg_byte();
		return 1;
	}
	return 0;
}
