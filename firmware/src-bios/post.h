/* What POST's C files share: fixed-width types, port I/O, physical
 * memory access and the entry points of each part of POST.
 *
 * POST runs in flat 32-bit protected mode with interrupts off, so a
 * pointer is a physical address. The 16-bit handlers it installs are
 * linked at their offsets within segment F000 (bios.ld), so the address
 * of such a symbol, taken in C, is already the IP an IVT entry needs. */
#ifndef POST_H
#define POST_H

#include "layout.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

static inline void outb(u16 port, u8 value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static inline u16 inw(u16 port)
{
	u16 value;
	__asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/* Physical memory. Built with -fno-delete-null-pointer-checks, so the
 * IVT at address 0 is an ordinary address to the compiler. */
#define PHYS8(addr)  (*(volatile u8 *)(u32)(addr))
#define PHYS16(addr) (*(volatile u16 *)(u32)(addr))
#define PHYS32(addr) (*(volatile u32 *)(u32)(addr))
#define BDA8(off)    PHYS8(0x400 + (off))
#define BDA16(off)   PHYS16(0x400 + (off))
#define BDA32(off)   PHYS32(0x400 + (off))
#define EBDA8(off)   PHYS8(EBDA_BASE + (off))
#define EBDA16(off)  PHYS16(EBDA_BASE + (off))
#define EBDA32(off)  PHYS32(EBDA_BASE + (off))

/* The emulator and most PC boards record a byte written to port 0x80:
 * the last one says how far POST got. */
static inline void post_code(u8 code)
{
	outb(0x80, code);
}

/* MC146818 RTC/CMOS: select a register (NMI left enabled), then read it. */
static inline u8 cmos_read(u8 reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

void console_init(void);
void console_putc(char c);
void console_puts(const char *s);
void console_putdec(u32 value);

int acpi_init(void);
void memory_map_init(int acpi_tables);
void ata_init(void);
void mptable_init(void);

#endif
