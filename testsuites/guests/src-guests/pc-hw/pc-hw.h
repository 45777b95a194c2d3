/*
 * pc-hw.h: what the parts of the pc-hw guest share.
 *
 * pc-hw is written the way an operating system for a 1990s PC would
 * drive its hardware, from the specifications alone: the Intel
 * MultiProcessor Specification 1.4 (mptable.c), the 8259A, 8254, local
 * APIC (SDM Vol. 3A chapter 10) and 82093AA I/O APIC (apic.c), ATA/ATAPI-4
 * PIO (ide.c) and the 16550A UART (uart.c). main.c runs the checks.
 */
#ifndef PC_HW_H
#define PC_HW_H

#include "guest.h"

/* ---- port I/O on words, and strings of words (the IDE data port) ---- */

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void insw(uint16_t port, void *dst, uint32_t words)
{
	asm volatile("rep insw" : "+D"(dst), "+c"(words) : "d"(port) : "memory");
}
static inline void outsw(uint16_t port, const void *src, uint32_t words)
{
	asm volatile("rep outsw" : "+S"(src), "+c"(words) : "d"(port));
}
static inline void cli(void)
{
	asm volatile("cli" : : : "memory");
}
static inline void sti(void)
{
	asm volatile("sti" : : : "memory");
}

/* ---- the MP tables (mptable.c) ---- */

/* What the configuration table told us, for one bus IRQ. */
struct irq_route {
	int found;
	uint8_t ioapic_id;  /* 0xFF: every I/O APIC */
	uint8_t pin;        /* INTIN# */
	uint16_t flags;     /* polarity (bits 0-1) and trigger mode (bits 2-3) */
};

struct mp_info {
	uint32_t floating;      /* physical address of "_MP_" */
	const char *found_in;   /* which area of the scan held it */
	uint8_t default_config; /* feature byte 1: nonzero, no table */
	int imcr_present;       /* feature byte 2, bit 7 */
	int config_ok;          /* signature, base and extended checksums */
	uint32_t lapic;         /* the local APICs' physical address */
	int processors;
	int bsp_lapic_id;       /* -1 if no processor entry has BP set */
	uint8_t bsp_lapic_version;
	uint32_t bsp_signature, bsp_features; /* as CPUID.1 EAX, EDX */
	int isa_bus;            /* -1 if no bus entry says "ISA" */
	int ioapics;
	uint8_t ioapic_id;      /* the first usable I/O APIC */
	uint8_t ioapic_version;
	uint32_t ioapic;        /* its physical address, 0 if none */
	int io_interrupts, local_interrupts, extended_entries;
	struct irq_route isa_irq[16];
};

/* Finds and parses the tables, printing every entry; base_memory_kib is
 * what the Multiboot loader reported, used when the BIOS data area is
 * empty. */
void mp_scan(struct mp_info *mp, uint32_t base_memory_kib);

/* ---- the interrupt controllers and the timer (apic.c) ---- */

/* IDT vectors. The 8259As are moved to 0x20-0x2F and masked; the APIC
 * vectors sit above them, one priority class (vector >> 4) each. */
#define VEC_PIC_BASE 0x20
#define VEC_TIMER 0x40
#define VEC_COM1 0x50
#define VEC_IDE 0x60
#define VEC_SPURIOUS 0xFF

#define IRQ_COM1 4
#define IRQ_IDE 14

/* Incremented by the LAPIC timer's handler. */
extern volatile uint32_t timer_ticks;

void pic_mask_all(void);
/* The two interrupt mask registers (OCW1), slave in bits 15-8. */
uint16_t pic_masks(void);
/* Takes the IMCR, if the MP table says there is one, to APIC mode. */
void imcr_select_apic(void);
void lapic_enable(uint32_t base);
uint32_t lapic_id(void);
uint32_t lapic_version(void);
/* Sends the end-of-interrupt a fixed interrupt's handler owes. */
void lapic_eoi(void);
/* Reads the I/O APIC's ID and version registers. */
uint32_t ioapic_id_register(uint32_t base);
uint32_t ioapic_version_register(uint32_t base);
void ioapic_mask_all(uint32_t base, int pins);
/* Routes a bus IRQ to `vector` on the LAPIC `dest`, fixed delivery,
 * physical destination; returns the redirection entry's low word. */
uint32_t ioapic_route(uint32_t base, const struct irq_route *r, int vector,
		      uint8_t dest, uint64_t *readback);
/* LAPIC timer counts (divide by 16) in `pit_counts` 8254 input clocks,
 * measured with channel 2 through port 0x61; 0 if the PIT never ended. */
uint32_t lapic_timer_calibrate(uint32_t pit_counts);
void lapic_timer_periodic(uint32_t initial_count);
uint32_t lapic_timer_current(void);
/* With interrupts enabled, polls PIT channel 2 for `pit_counts` input
 * clocks; returns the timer ticks that arrived, or -1 if it never ended. */
int ticks_during_pit(uint32_t pit_counts);
/* Halts (sti; hlt) until *counter differs from `seen`; gives up after
 * `timeout_ticks` LAPIC timer ticks. Returns with interrupts off, 1 if
 * the counter moved. */
int wait_for_interrupt(volatile uint32_t *counter, uint32_t seen,
		       uint32_t timeout_ticks);

#define PIT_HZ 1193182
#define TIMER_HZ 100

/* ---- the IDE disk on the primary channel (ide.c) ---- */

#define IDE_MASTER 0
#define IDE_SLAVE 1
#define SECTOR_BYTES 512

struct ide_identity {
	int present;
	uint16_t words[256];
	char model[41], serial[21], firmware[9];
	uint32_t lba_sectors;  /* words 60-61: addressable with LBA28 */
	int lba;               /* word 49 bit 9 */
	uint8_t max_multiple;  /* word 47 bits 0-7 */
};

/* What one command did, for the checks. */
struct ide_result {
	int ok;
	uint8_t status, error; /* at the end, or at the failure */
	uint32_t irqs;         /* IRQ 14s taken */
	const char *failure;   /* NULL when ok */
};

extern volatile uint32_t ide_irqs;

void ide_interrupts_on(void);
/* Selects the drive and runs IDENTIFY DEVICE. */
struct ide_result ide_identify(int drive, struct ide_identity *id);
struct ide_result ide_read_sectors(int drive, uint32_t lba, int count, void *buf);
/* READ SECTORS with nIEN set, polling; irqs counts any IRQ 14 anyway. */
struct ide_result ide_read_sectors_polled(int drive, uint32_t lba, int count,
					  void *buf);
struct ide_result ide_write_sectors(int drive, uint32_t lba, int count,
				    const void *buf);
struct ide_result ide_set_multiple(int drive, int block);
struct ide_result ide_read_multiple(int drive, uint32_t lba, int count,
				    int block, void *buf);
struct ide_result ide_write_multiple(int drive, uint32_t lba, int count,
				     int block, const void *buf);

/* ---- COM1 input (uart.c) ---- */

/* Programs the 16550A for interrupt-driven input; returns IIR as read
 * after enabling the FIFOs (bits 7-6 = 11 on a 16550A). */
uint8_t uart_start(void);
void uart_enable_interrupt(void);
extern volatile uint32_t uart_irqs;       /* IRQ 4s taken */
extern volatile uint32_t uart_irq_bytes;  /* bytes the handler read */
extern uint32_t uart_early_bytes;         /* read while starting, before the FIFO */
/* Waits for one line (ending in CR or LF); returns its length without the
 * terminator, or -1 on timeout. */
int uart_read_line(char *line, int size, uint32_t timeout_ticks);

#endif /* PC_HW_H */
