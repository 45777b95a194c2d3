/*
 * pic.c: the PC's original interrupt hardware, the fallback when there
 * is no MP table: two 8259A interrupt controllers and the 8254 timer.
 *
 * The 8259A pair delivers IRQs 0-15. Out of reset (and as the BIOS
 * leaves them) the master uses vectors 8-15, the same numbers as CPU
 * exceptions such as #DF and #GP, so we move IRQ 0-15 to vectors 32-47.
 */
#include "kernel.h"

#define PIC_MASTER 0x20 /* command port; data (mask) port is +1 */
#define PIC_SLAVE 0xA0
#define ICW1_INIT 0x11  /* start initialisation; edge-triggered; ICW4 follows */
#define ICW4_8086 0x01
#define OCW2_EOI 0x20   /* non-specific end of interrupt */
#define CASCADE_IRQ 2   /* the slave is wired to the master's IR2 */

#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_HZ 1193182  /* the 8254's input clock */
#define PIT_MODE2_LOHI 0x34 /* channel 0, low then high byte, rate generator */
#define PIT_MODE0_LOHI 0x30 /* channel 0, low then high byte, one-shot */

static uint16_t irq_mask = 0xFFFF; /* bit n set: IRQ n masked */

static void write_masks(void)
{
	outb(PIC_MASTER + 1, (uint8_t)irq_mask);
	outb(PIC_SLAVE + 1, (uint8_t)(irq_mask >> 8));
}

/* The initialisation sequence of the 8259A data sheet: ICW1 on the
 * command port, then ICW2 (vector base), ICW3 (cascade wiring) and ICW4
 * (8086 mode) on the data port. Every IRQ is left masked. */
void pic_init(void)
{
	outb(PIC_MASTER, ICW1_INIT);
	outb(PIC_MASTER + 1, T_IRQ0);
	outb(PIC_MASTER + 1, 1 << CASCADE_IRQ);
	outb(PIC_MASTER + 1, ICW4_8086);
	outb(PIC_SLAVE, ICW1_INIT);
	outb(PIC_SLAVE + 1, T_IRQ0 + 8);
	outb(PIC_SLAVE + 1, CASCADE_IRQ);
	outb(PIC_SLAVE + 1, ICW4_8086);
	irq_mask = 0xFFFF;
	write_masks();
}

void pic_unmask(int irq)
{
	irq_mask &= ~(1 << irq);
	write_masks();
}

/* On the APIC path: the 8259A must stay quiet, so it cannot deliver
 * through the LAPIC's LINT0 pin behind the IOAPIC's back. */
void pic_mask_all(void)
{
	irq_mask = 0xFFFF;
	write_masks();
}

/* Without an EOI the 8259A delivers no further interrupt of this or
 * lower priority. */
void pic_eoi(int irq)
{
	if (irq >= 8)
		outb(PIC_SLAVE, OCW2_EOI);
	outb(PIC_MASTER, OCW2_EOI);
}

/* Channel 0 in mode 2 raises IRQ 0 every `divisor` input clocks. */
void pit_start_periodic(uint32_t hz)
{
	uint32_t divisor = (PIT_HZ + hz / 2) / hz;

	outb(PIT_COMMAND, PIT_MODE2_LOHI);
	outb(PIT_CHANNEL0, (uint8_t)divisor);
	outb(PIT_CHANNEL0, (uint8_t)(divisor >> 8));
}

/* Writing a mode 0 control word drives the output low and stops the
 * count until a new count is written (8254 data sheet, mode 0): no
 * more IRQ 0 edges. */
void pit_stop(void)
{
	outb(PIT_COMMAND, PIT_MODE0_LOHI);
}
