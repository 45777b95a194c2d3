/*
 * irq-pm: hardware interrupts in 32-bit protected mode without paging,
 * the way a 1980s protected-mode kernel took them: the 8259A pair
 * moved to vectors 0x20-0x2F, the 8254's channel 0 as a 1 kHz rate
 * generator on IRQ 0, and the CPU waiting for each tick with `sti; hlt`.
 * Along the way it reads the MC146818 through its index and data ports
 * and writes POST codes to port 0x80, so a run exercises port I/O to
 * four devices besides COM1.
 *
 * It is short (a few thousand instructions after the runtime's start)
 * and prints nothing that depends on when the ticks arrive, so two
 * engines, or one engine and the lockstep comparator, can be held to the
 * same COM1 output. It never turns paging on: a host whose KVM runs only
 * real mode and unpaged protected mode can run it.
 *
 * Vector 0x20 is an interrupt gate (IF is clear in the handler, SDM Vol.
 * 3A 6.12.1.3) to timer_entry in irq-pm.S, which returns without IRET
 * (it says why); the C handler reads the master's in-service register
 * before and after its EOI.
 */
#include "guest.h"

#define PIC_MASTER 0x20
#define PIC_SLAVE 0xA0
#define ICW1_INIT_ICW4 0x11 /* edge triggered, cascade, ICW4 follows */
#define ICW4_8086 0x01
#define OCW2_EOI 0x20       /* non-specific end of interrupt */
#define OCW3_READ_IRR 0x0A
#define OCW3_READ_ISR 0x0B
#define VEC_PIC_BASE 0x20
#define VEC_TIMER (VEC_PIC_BASE + 0)

#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
/* Channel 0, LSB then MSB, mode 2 (rate generator), binary. */
#define PIT_CH0_RATE_GENERATOR 0x34
/* Read-back (8254 data sheet): latch the status of channel 0 only. */
#define PIT_READ_BACK_STATUS_CH0 0xE2
/* Status bits 5-0 repeat the control word's RW, mode and BCD fields;
 * bit 7 (OUT) and bit 6 (null count) depend on when we look. */
#define PIT_STATUS_PROGRAMMING 0x3F
#define PIT_HZ 1193182
#define TICK_HZ 1000
#define PIT_DIVISOR ((PIT_HZ + TICK_HZ / 2) / TICK_HZ) /* 1193 */
#define TICKS 20

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define CMOS_SECONDS 0x00
#define CMOS_STATUS_A 0x0A
#define CMOS_STATUS_B 0x0B
#define CMOS_A_UIP 0x80  /* an update cycle is under way */
#define CMOS_B_DM 0x04   /* time registers in binary, not BCD */

#define POST_PORT 0x80

static volatile uint32_t ticks;
/* Ticks whose handler did not find IR0 alone in service before its EOI,
 * or found anything in service after it. */
static volatile uint32_t bad_isr;

static void post(uint8_t code)
{
	outb(POST_PORT, code);
}

/* The 8259A's initialisation sequence: ICW1 on the command port, then
 * ICW2 (vector base), ICW3 (the slave on IR2) and ICW4 (8086 mode) on
 * the data port; then OCW1 leaves only IR0 unmasked. */
static void pic_init(void)
{
	outb(PIC_MASTER, ICW1_INIT_ICW4);
	outb(PIC_MASTER + 1, VEC_PIC_BASE);
	outb(PIC_MASTER + 1, 1 << 2);
	outb(PIC_MASTER + 1, ICW4_8086);
	outb(PIC_SLAVE, ICW1_INIT_ICW4);
	outb(PIC_SLAVE + 1, VEC_PIC_BASE + 8);
	outb(PIC_SLAVE + 1, 2);
	outb(PIC_SLAVE + 1, ICW4_8086);
	outb(PIC_MASTER + 1, 0xFE);
	outb(PIC_SLAVE + 1, 0xFF);
}

static uint8_t pic_master_isr(void)
{
	uint8_t isr;

	outb(PIC_MASTER, OCW3_READ_ISR);
	isr = inb(PIC_MASTER);
	outb(PIC_MASTER, OCW3_READ_IRR);
	return isr;
}

void timer_entry(void);
void timer_interrupt(void);

void timer_interrupt(void)
{
	if (pic_master_isr() != 0x01)
		bad_isr++;
	outb(PIC_MASTER, OCW2_EOI);
	if (pic_master_isr() != 0x00)
		bad_isr++;
	ticks++;
}

static void pit_start(uint16_t divisor)
{
	outb(PIT_COMMAND, PIT_CH0_RATE_GENERATOR);
	outb(PIT_CHANNEL0, divisor & 0xFF);
	outb(PIT_CHANNEL0, divisor >> 8);
}

static uint8_t pit_status(void)
{
	outb(PIT_COMMAND, PIT_READ_BACK_STATUS_CH0);
	return inb(PIT_CHANNEL0);
}

static uint8_t cmos_read(uint8_t reg)
{
	outb(CMOS_INDEX, reg);
	return inb(CMOS_DATA);
}

/* The seconds register, read outside an update cycle (MC146818A data
 * sheet: UIP is set 244 us before the time registers change), is 0-59 in
 * the format register B selects. The value itself is the time of day, so
 * only its validity is reported. */
static int cmos_seconds_valid(int *bcd)
{
	uint8_t s;
	int polls = 100000;

	while ((cmos_read(CMOS_STATUS_A) & CMOS_A_UIP) && --polls)
		;
	*bcd = !(cmos_read(CMOS_STATUS_B) & CMOS_B_DM);
	s = cmos_read(CMOS_SECONDS);
	if (*bcd)
		return (s & 0x0F) <= 9 && s <= 0x59;
	return s <= 59;
}

int guest_main(void)
{
	uint8_t imr_master, imr_slave, status;
	int bcd;

	kprintf("irq-pm: start\n");
	post(0x01);
	if (!cmos_seconds_valid(&bcd)) {
		kprintf("irq-pm: FAIL: CMOS seconds register out of range\n");
		return 1;
	}

	post(0x02);
	pic_init();
	imr_master = inb(PIC_MASTER + 1);
	imr_slave = inb(PIC_SLAVE + 1);
	if (imr_master != 0xFE || imr_slave != 0xFF) {
		kprintf("irq-pm: FAIL: 8259A masks read back %02x/%02x, "
			"expected fe/ff\n", imr_master, imr_slave);
		return 2;
	}
	idt_set(VEC_TIMER, gate_descriptor(SEL_KCODE, (uint32_t)timer_entry,
					   ACC_P | ACC_INT_GATE32, 0));

	post(0x03);
	pit_start(PIT_DIVISOR);
	status = pit_status() & PIT_STATUS_PROGRAMMING;
	if (status != (PIT_CH0_RATE_GENERATOR & PIT_STATUS_PROGRAMMING)) {
		kprintf("irq-pm: FAIL: 8254 channel 0 status %#x, expected %#x\n",
			status, PIT_CH0_RATE_GENERATOR & PIT_STATUS_PROGRAMMING);
		return 3;
	}

	post(0x04);
	/* STI delays interrupts until after the next instruction (SDM Vol.
	 * 2B STI), so no tick slips in between the test and the HLT and
	 * leaves us halted for one period too long. */
	while (ticks < TICKS)
		asm volatile("sti; hlt; cli" : : : "memory");
	outb(PIC_MASTER + 1, 0xFF);
	if (bad_isr) {
		kprintf("irq-pm: FAIL: %u in-service register reads were wrong\n",
			bad_isr);
		return 4;
	}

	post(0x05);
	kprintf("irq-pm: %u timer interrupts at vector %#x (8254 divisor %u), "
		"IR0 in service until each EOI, 8259A masks fe/ff, "
		"8254 status %#x, CMOS seconds valid (%s)\n",
		ticks, VEC_TIMER, PIT_DIVISOR, status, bcd ? "BCD" : "binary");
	return 0;
}
