/*
 * Lab 4, interrupts: program the 8259A PIC to deliver IRQ 0 at vector
 * 32, the 8254 PIT to interrupt 100 times a second, and count ticks with
 * interrupts on, halting between them, until half a second has passed.
 */
#include "lab.h"

#define PIC1 0x20
#define PIC2 0xA0
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define PIT_HZ 1193182u
#define HZ 100

static volatile uint32_t ticks;

void timer_interrupt(void)
{
	ticks++;
	outb(PIC1, 0x20); /* end of interrupt (OCW2 non-specific EOI) */
}

static void pic_init(void)
{
	outb(PIC1, 0x11);     /* ICW1: edge, cascade, ICW4 follows */
	outb(PIC1 + 1, 32);   /* ICW2: IRQ 0-7 at vectors 32-39 */
	outb(PIC1 + 1, 0x04); /* ICW3: the slave on IRQ 2 */
	outb(PIC1 + 1, 0x01); /* ICW4: 8086 mode */
	outb(PIC2, 0x11);
	outb(PIC2 + 1, 40);
	outb(PIC2 + 1, 0x02);
	outb(PIC2 + 1, 0x01);
	outb(PIC1 + 1, 0xFE); /* mask all but IRQ 0 */
	outb(PIC2 + 1, 0xFF);
}

static void pit_init(void)
{
	uint32_t divisor = PIT_HZ / HZ;

	outb(PIT_MODE, 0x34); /* channel 0, lobyte/hibyte, mode 2 */
	outb(PIT_CH0, (uint8_t)divisor);
	outb(PIT_CH0, (uint8_t)(divisor >> 8));
}

void kmain(void)
{
	pic_init();
	pit_init();
	sti();
	while (ticks < HZ / 2)
		hlt();
	cli();
	puts("ticks: ");
	put_dec(ticks);
	puts("\n");
	exit(0);
}
