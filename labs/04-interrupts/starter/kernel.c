/*
 * Lab 4, interrupts: program the 8259A PIC to deliver IRQ 0 at vector
 * 32, the 8254 PIT to interrupt 100 times a second, and count ticks with
 * interrupts on, halting between them, until half a second has passed.
 *
 * Check your work with:  ringside lab check 4 DIR
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
	/*
	 * TODO 3: count the tick, and tell the PIC the interrupt is done
	 * (an end-of-interrupt command, OCW2, to port PIC1): until then it
	 * sends no more IRQ 0s.
	 */
}

static void pic_init(void)
{
	/*
	 * TODO 1: initialize both 8259As (ICW1 to ICW4): the master's IRQs
	 * 0-7 at vectors 32-39, the slave's at 40-47, the slave on the
	 * master's IRQ 2, 8086 mode. Then mask every IRQ but IRQ 0 (OCW1).
	 */
}

static void pit_init(void)
{
	/*
	 * TODO 2: the 8254's channel 0 in mode 2 (rate generator), with a
	 * divisor of PIT_HZ / HZ written low byte then high byte.
	 */
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
