/*
 * uart.c: console input from COM1's 16550A, by interrupt.
 *
 * The 16550A (National Semiconductor data sheet) raises its INTR output
 * for the causes enabled in IER; on a PC, INTR reaches IRQ 4 only while
 * the OUT2 bit of MCR is set (the board gates it there). IIR names the
 * highest-priority cause pending, and reading the register that cause
 * concerns clears it: RBR for received data, LSR for a line status
 * error, MSR for a modem status change. With the FIFOs enabled (FCR bit
 * 0) and a trigger level of one byte, "received data available" is
 * raised as soon as one byte is in the receive FIFO.
 *
 * IRQ 4 is edge-triggered (ISA), so the handler must leave INTR low:
 * it keeps reading IIR until it says no interrupt is pending, draining
 * the FIFO into a ring buffer the reader takes lines from.
 *
 * Output stays as lib/serial.c does it (polling THR empty); the line
 * format and the baud rate are left as the firmware set them.
 */
#include "pc-hw.h"

#define COM1 0x3F8
#define UART_RBR (COM1 + 0)
#define UART_IER (COM1 + 1)
#define UART_IIR (COM1 + 2)   /* read */
#define UART_FCR (COM1 + 2)   /* write */
#define UART_LCR (COM1 + 3)
#define UART_MCR (COM1 + 4)
#define UART_LSR (COM1 + 5)
#define UART_MSR (COM1 + 6)

#define IER_RECEIVED_DATA 0x01
#define IIR_NONE_PENDING 0x01
#define IIR_CAUSE 0x0E
#define IIR_LINE_STATUS 0x06
#define IIR_RECEIVED_DATA 0x04
#define IIR_CHARACTER_TIMEOUT 0x0C
#define IIR_MODEM_STATUS 0x00
#define FCR_ENABLE 0x01
#define FCR_RX_RESET 0x02
#define FCR_TRIGGER_1 0x00
#define LCR_DLAB 0x80
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT2 0x08
#define LSR_DATA_READY 0x01
#define LSR_TRANSMITTER_EMPTY 0x40

#define FIFO_BYTES 16
#define RING_BYTES 256

volatile uint32_t uart_irqs;
volatile uint32_t uart_irq_bytes;
uint32_t uart_early_bytes;
static uint8_t ring[RING_BYTES];
static volatile uint32_t ring_head, ring_tail;

static void ring_put(uint8_t c)
{
	if (ring_head - ring_tail < RING_BYTES)
		ring[ring_head++ % RING_BYTES] = c;
}

/* Call with interrupts off. Returns -1 when empty. */
static int ring_take(void)
{
	if (ring_tail == ring_head)
		return -1;
	return ring[ring_tail++ % RING_BYTES];
}

static void uart_interrupt(struct trapframe *tf)
{
	(void)tf;
	for (int causes = 0; causes < FIFO_BYTES; causes++) {
		uint8_t iir = inb(UART_IIR);

		if (iir & IIR_NONE_PENDING)
			break;
		switch (iir & IIR_CAUSE) {
		case IIR_RECEIVED_DATA:
		case IIR_CHARACTER_TIMEOUT:
			for (int n = 0; n < FIFO_BYTES && (inb(UART_LSR) & LSR_DATA_READY); n++) {
				ring_put(inb(UART_RBR));
				uart_irq_bytes++;
			}
			break;
		case IIR_LINE_STATUS:
			inb(UART_LSR);
			break;
		case IIR_MODEM_STATUS:
			inb(UART_MSR);
			break;
		default: /* THR empty: reading IIR cleared it */
			break;
		}
	}
	uart_irqs++;
	lapic_eoi();
}

/*
 * Without FIFOs the UART holds one received byte in RBR, and switching
 * the FIFOs on clears it (data sheet, FCR bit 0). A byte typed before we
 * start is kept by reading it first, with FCR written right after: a
 * byte that arrives between the two is lost, as on the real part, so the
 * window is as short as we can make it. Waiting for the transmitter to
 * empty first keeps the last byte of our own output from being cleared.
 */
uint8_t uart_start(void)
{
	outb(UART_IER, 0);
	outb(UART_LCR, inb(UART_LCR) & ~LCR_DLAB);
	for (uint32_t i = 0; i < 1000000 && !(inb(UART_LSR) & LSR_TRANSMITTER_EMPTY); i++)
		;
	if (inb(UART_LSR) & LSR_DATA_READY) {
		uint8_t c = inb(UART_RBR);

		outb(UART_FCR, FCR_ENABLE | FCR_RX_RESET | FCR_TRIGGER_1);
		ring_put(c);
		uart_early_bytes++;
	} else {
		outb(UART_FCR, FCR_ENABLE | FCR_RX_RESET | FCR_TRIGGER_1);
	}
	outb(UART_MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
	inb(UART_LSR);
	inb(UART_MSR);
	return inb(UART_IIR);
}

void uart_enable_interrupt(void)
{
	set_trap_handler(VEC_COM1, uart_interrupt);
	outb(UART_IER, IER_RECEIVED_DATA);
}

int uart_read_line(char *line, int size, uint32_t timeout_ticks)
{
	uint32_t start = timer_ticks;
	int len = 0;

	for (;;) {
		uint32_t seen, waited;
		int c;

		cli();
		seen = uart_irqs;
		while ((c = ring_take()) >= 0) {
			if (c == '\r' || c == '\n') {
				if (len == 0)
					continue; /* the LF of a CR LF, or an empty line */
				line[len] = 0;
				return len;
			}
			if (len < size - 1)
				line[len++] = (char)c;
		}
		waited = timer_ticks - start;
		if (waited >= timeout_ticks ||
		    !wait_for_interrupt(&uart_irqs, seen, timeout_ticks - waited))
			return -1;
	}
}
