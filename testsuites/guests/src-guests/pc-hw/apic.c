/*
 * apic.c: the interrupt path of a PC with APICs, and its timers.
 *
 * Out of reset (and as a BIOS leaves it) a PC delivers device IRQs
 * through the two 8259A PICs, whose output reaches the CPU through the
 * local APIC's LINT0 (virtual wire) or, on boards with an IMCR, around
 * it. An APIC OS masks the 8259As, enables the local APIC (SDM Vol. 3A
 * 10.4.3, the spurious-interrupt vector register) and programs one
 * redirection entry of the 82093AA I/O APIC per device IRQ (82093AA
 * data sheet 3.2.4): vector, polarity, trigger mode and destination.
 *
 * The local APIC timer (SDM Vol. 3A 10.5.4) counts at a rate the
 * platform chooses, so an OS measures it against the one clock every PC
 * has at a known rate: the 8254's 1.193182 MHz. Channel 2 is the one
 * software may run and watch without an interrupt: its gate is bit 0 of
 * port 0x61 and its output can be read back in bit 5 (the speaker port
 * of the IBM PC/AT), which is how BIOSes and OSes have long timed delays.
 */
#include "pc-hw.h"

/* ---- the 8259A pair ---- */

#define PIC_MASTER 0x20
#define PIC_SLAVE 0xA0
#define ICW1_INIT_ICW4 0x11 /* edge triggered, cascade, ICW4 follows */
#define ICW4_8086 0x01

/* The initialisation sequence of the 8259A data sheet: ICW1 on the
 * command port, then ICW2 (vector base), ICW3 (cascade on IR2) and ICW4
 * on the data port. Moving the vectors off 0x08-0x0F keeps a stray 8259A
 * interrupt from posing as an exception; then OCW1 masks every line. */
void pic_mask_all(void)
{
	outb(PIC_MASTER, ICW1_INIT_ICW4);
	outb(PIC_MASTER + 1, VEC_PIC_BASE);
	outb(PIC_MASTER + 1, 1 << 2);
	outb(PIC_MASTER + 1, ICW4_8086);
	outb(PIC_SLAVE, ICW1_INIT_ICW4);
	outb(PIC_SLAVE + 1, VEC_PIC_BASE + 8);
	outb(PIC_SLAVE + 1, 2);
	outb(PIC_SLAVE + 1, ICW4_8086);
	outb(PIC_MASTER + 1, 0xFF);
	outb(PIC_SLAVE + 1, 0xFF);
}

uint16_t pic_masks(void)
{
	return (uint16_t)(inb(PIC_MASTER + 1) | inb(PIC_SLAVE + 1) << 8);
}

/* MP 1.4 3.6.2.1: in PIC mode the IMCR routes the 8259A straight to the
 * CPU's INTR; writing 1 to register 0x70 connects the APICs instead. */
void imcr_select_apic(void)
{
	outb(0x22, 0x70);
	outb(0x23, 0x01);
}

/* ---- the local APIC (SDM Vol. 3A 10.4.1, table 10-1) ---- */

#define LAPIC_ID 0x020
#define LAPIC_VERSION 0x030
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3E0
#define SVR_APIC_ENABLE 0x100
#define LVT_DELIVERY_NMI 0x400
#define LVT_MASKED 0x10000
#define LVT_TIMER_PERIODIC 0x20000
#define DIVIDE_BY_16 0x3

static uint32_t lapic_base;
volatile uint32_t timer_ticks;

static uint32_t lapic_read(uint32_t reg)
{
	return *(volatile uint32_t *)(lapic_base + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(lapic_base + reg) = v;
}

void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

uint32_t lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

uint32_t lapic_version(void)
{
	return lapic_read(LAPIC_VERSION);
}

static void timer_interrupt(struct trapframe *tf)
{
	(void)tf;
	timer_ticks++;
	lapic_eoi();
}

/* A spurious interrupt is not in service: no EOI (SDM Vol. 3A 10.9). */
static void spurious_interrupt(struct trapframe *tf)
{
	(void)tf;
}

/* LINT0 carried the 8259A's INTR in virtual wire mode; with the I/O APIC
 * in charge it is masked. LINT1 stays the NMI input, as the MP table's
 * local interrupt entries describe a PC. */
void lapic_enable(uint32_t base)
{
	lapic_base = base;
	set_trap_handler(VEC_TIMER, timer_interrupt);
	set_trap_handler(VEC_SPURIOUS, spurious_interrupt);
	lapic_write(LAPIC_SVR, SVR_APIC_ENABLE | VEC_SPURIOUS);
	lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
	lapic_write(LAPIC_LVT_LINT1, LVT_DELIVERY_NMI);
	lapic_write(LAPIC_LVT_ERROR, LVT_MASKED);
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(LAPIC_TPR, 0);
}

/* ---- the I/O APIC (82093AA data sheet 3.0) ---- */

#define IOREGSEL 0x00
#define IOWIN 0x10
#define IOAPICID 0x00
#define IOAPICVER 0x01
#define IOREDTBL(pin) (0x10 + 2 * (pin))
#define REDIR_ACTIVE_LOW 0x2000
#define REDIR_LEVEL 0x8000
#define REDIR_MASKED 0x10000
/* Delivery status (bit 12) and remote IRR (bit 14) are read-only. */
#define REDIR_READ_ONLY 0x5000

static uint32_t ioapic_read(uint32_t base, uint32_t reg)
{
	*(volatile uint32_t *)(base + IOREGSEL) = reg;
	return *(volatile uint32_t *)(base + IOWIN);
}

static void ioapic_write(uint32_t base, uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(base + IOREGSEL) = reg;
	*(volatile uint32_t *)(base + IOWIN) = v;
}

uint32_t ioapic_id_register(uint32_t base)
{
	return ioapic_read(base, IOAPICID);
}

uint32_t ioapic_version_register(uint32_t base)
{
	return ioapic_read(base, IOAPICVER);
}

void ioapic_mask_all(uint32_t base, int pins)
{
	for (int pin = 0; pin < pins; pin++)
		ioapic_write(base, IOREDTBL(pin), REDIR_MASKED);
}

/* MP 1.4 4.3.4: polarity and trigger "conform to the bus"; for ISA
 * that is active high and edge triggered. The destination (bits 56-63)
 * is written before the low word unmasks the entry. Returns the low
 * word written; *readback gets the entry as read back, without its
 * read-only bits. */
uint32_t ioapic_route(uint32_t base, const struct irq_route *r, int vector,
		      uint8_t dest, uint64_t *readback)
{
	uint32_t low = (uint32_t)vector;

	if ((r->flags & 3) == 3)
		low |= REDIR_ACTIVE_LOW;
	if (((r->flags >> 2) & 3) == 3)
		low |= REDIR_LEVEL;
	ioapic_write(base, IOREDTBL(r->pin) + 1, (uint32_t)dest << 24);
	ioapic_write(base, IOREDTBL(r->pin), low);
	*readback = (ioapic_read(base, IOREDTBL(r->pin)) & ~REDIR_READ_ONLY) |
		    (uint64_t)ioapic_read(base, IOREDTBL(r->pin) + 1) << 32;
	return low;
}

/* ---- PIT channel 2 and the LAPIC timer ---- */

#define PORT_B 0x61
#define PORT_B_GATE2 0x01
#define PORT_B_SPEAKER 0x02
#define PORT_B_OUT2 0x20
#define PIT_CHANNEL2 0x42
#define PIT_COMMAND 0x43
#define PIT_CHANNEL2_MODE0 0xB0 /* channel 2, LSB then MSB, mode 0, binary */
/* More port 0x61 reads than any working 8254 needs for 65535 counts, so
 * a broken one cannot hang us. */
#define PIT_POLL_LIMIT 50000000u

/* Mode 0 ("interrupt on terminal count"): OUT goes low when the control
 * word is written and high when the count reaches zero; a low gate holds
 * the count. The gate stays low until pit_channel2_go(). */
static void pit_channel2_arm(uint32_t counts)
{
	outb(PORT_B, inb(PORT_B) & 0x0F & ~(PORT_B_GATE2 | PORT_B_SPEAKER));
	outb(PIT_COMMAND, PIT_CHANNEL2_MODE0);
	outb(PIT_CHANNEL2, (uint8_t)counts);
	outb(PIT_CHANNEL2, (uint8_t)(counts >> 8));
}

static void pit_channel2_go(void)
{
	outb(PORT_B, (inb(PORT_B) & 0x0F & ~PORT_B_SPEAKER) | PORT_B_GATE2);
}

/* Returns 1 once OUT2 went high, 0 if it never did. */
static int pit_channel2_wait(void)
{
	for (uint32_t i = 0; i < PIT_POLL_LIMIT; i++)
		if (inb(PORT_B) & PORT_B_OUT2)
			return 1;
	return 0;
}

uint32_t lapic_timer_calibrate(uint32_t pit_counts)
{
	uint32_t left;

	pit_channel2_arm(pit_counts);
	lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_16);
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(LAPIC_TIMER_INITIAL, 0xFFFFFFFF);
	pit_channel2_go();
	if (!pit_channel2_wait())
		return 0;
	left = lapic_read(LAPIC_TIMER_CURRENT);
	lapic_write(LAPIC_TIMER_INITIAL, 0);
	return 0xFFFFFFFF - left;
}

void lapic_timer_periodic(uint32_t initial_count)
{
	lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_16);
	lapic_write(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | VEC_TIMER);
	lapic_write(LAPIC_TIMER_INITIAL, initial_count);
}

uint32_t lapic_timer_current(void)
{
	return lapic_read(LAPIC_TIMER_CURRENT);
}

int ticks_during_pit(uint32_t pit_counts)
{
	uint32_t start;
	int ended;

	pit_channel2_arm(pit_counts);
	start = timer_ticks;
	pit_channel2_go();
	sti();
	ended = pit_channel2_wait();
	cli();
	return ended ? (int)(timer_ticks - start) : -1;
}

/* The test of the counter and the HLT are not atomic, so the test runs
 * with interrupts off and STI's one-instruction shadow (SDM Vol. 2B STI)
 * keeps an interrupt from slipping in between STI and HLT: it wakes the
 * HLT instead of being lost. */
int wait_for_interrupt(volatile uint32_t *counter, uint32_t seen,
		       uint32_t timeout_ticks)
{
	uint32_t start = timer_ticks;

	cli();
	while (*counter == seen) {
		if (timer_ticks - start >= timeout_ticks)
			return 0;
		asm volatile("sti; hlt; cli" : : : "memory");
	}
	return 1;
}
