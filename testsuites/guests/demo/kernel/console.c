/*
 * console.c: the console, on COM1 (a 16550A UART at ports 0x3F8-0x3FF,
 * IRQ 4; PC16550D data sheet) and on the PC's screen and keyboard.
 *
 * Every byte written goes to both COM1 and the VGA text screen (80x25 at
 * 0xB8000, one character and one attribute byte per cell; the hardware
 * cursor follows through the CRT controller's registers 0Eh/0Fh at ports
 * 0x3D4/0x3D5). Input comes from either: COM1's bytes and the keyboard's
 * keys (IRQ 1, set-1 scancodes from the 8042's data port 0x60, US
 * layout) land in the same receive ring.
 *
 * Output is polled: wait until the transmit holding register is empty
 * (LSR.THRE), then write the byte. A '\n' goes out as "\r\n", as a
 * terminal expects.
 *
 * Input is interrupt-driven, in two halves, as in xv6:
 *   - console_intr(), the IRQ 4 handler, moves received bytes from the
 *     UART into `rx`, a ring buffer, and wakes up readers;
 *   - console_read(), in the reading process, takes bytes from the ring
 *     and edits a line with them (echo, backspace, ^U). It sleeps while
 *     the ring is empty; the CPU then halts with interrupts enabled
 *     until the next byte arrives (proc.c, scheduler).
 * Echo happens when a process reads, not when the byte arrives, so
 * input typed ahead (or piped in all at once) is echoed after the prompt
 * that asks for it, never in the middle of other output: the session
 * reads the same however fast the bytes came.
 *
 * The baud rate is left as the firmware set it.
 */
#include "kernel.h"

#define COM1 0x3F8
#define UART_DATA (COM1 + 0) /* RBR when read, THR when written */
#define UART_IER (COM1 + 1)  /* interrupt enable */
#define UART_IIR (COM1 + 2)  /* interrupt identification, when read */
#define UART_FCR (COM1 + 2)  /* FIFO control, when written */
#define UART_MCR (COM1 + 4)  /* modem control */
#define UART_LSR (COM1 + 5)  /* line status */
#define IER_RX_DATA 0x01     /* interrupt when a byte has been received */
#define IIR_FIFOS_ON 0xC0
#define FCR_FIFOS_ON 0x01     /* and bits 7-6 = 00: interrupt at 1 byte */
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT2 0x08        /* on a PC, gates the UART's IRQ line */
#define LSR_DATA_READY 0x01
#define LSR_THRE 0x20

#define VGA_TEXT ((volatile uint16_t *)0xB8000)
#define VGA_COLS 80
#define VGA_ROWS 25
#define VGA_ATTR 0x0700 /* light grey on black */
#define CRTC_INDEX 0x3D4
#define CRTC_DATA 0x3D5
#define CRTC_CURSOR_HIGH 0x0E
#define CRTC_CURSOR_LOW 0x0F

#define KBC_DATA 0x60
#define KBC_STATUS 0x64 /* when read */
#define KBC_COMMAND 0x64 /* when written */
#define KBC_STATUS_OBF 0x01 /* a byte waits in the output buffer */
#define KBC_STATUS_IBF 0x02 /* the controller has not taken our last byte */
#define KBC_WRITE_COMMAND_BYTE 0x60
/* Keyboard interrupt on, system flag, mouse port off, set-1 translation. */
#define KBC_COMMAND_BYTE 0x65
#define SC_BREAK 0x80
#define SC_LEFT_SHIFT 0x2A
#define SC_RIGHT_SHIFT 0x36
#define SC_CTRL 0x1D

#define RX_SIZE 256
#define LINE_MAX 128

/* The receive ring: bytes rx_read..rx_write-1 (indices run freely and
 * wrap modulo RX_SIZE). Shared with the interrupt handler, so touched
 * only with interrupts off. */
static uint8_t rx[RX_SIZE];
static uint32_t rx_read, rx_write;
static int rx_paused;

/* The line being handed out by console_read: line[line_pos..line_len). */
static char line[LINE_MAX];
static int line_len, line_pos;
static int after_cr;

/* The screen's cursor, a cell index; -1 until first used. */
static int vga_pos = -1;
static int shift, ctrl;

static void uart_putc(char c)
{
	while ((inb(UART_LSR) & LSR_THRE) == 0)
		;
	outb(UART_DATA, (uint8_t)c);
}

static void vga_cursor(void)
{
	outb(CRTC_INDEX, CRTC_CURSOR_HIGH);
	outb(CRTC_DATA, (uint8_t)(vga_pos >> 8));
	outb(CRTC_INDEX, CRTC_CURSOR_LOW);
	outb(CRTC_DATA, (uint8_t)vga_pos);
}

/* One byte on the screen: newline, carriage return and backspace move
 * the cursor; the screen scrolls up a line at the bottom. */
static void vga_putc(char c)
{
	if (vga_pos < 0) {
		/* Go on below what the firmware left (its cursor), at the
		 * start of a line. */
		outb(CRTC_INDEX, CRTC_CURSOR_HIGH);
		vga_pos = inb(CRTC_DATA) << 8;
		outb(CRTC_INDEX, CRTC_CURSOR_LOW);
		vga_pos |= inb(CRTC_DATA);
		if (vga_pos % VGA_COLS)
			vga_pos += VGA_COLS - vga_pos % VGA_COLS;
		if (vga_pos >= VGA_COLS * VGA_ROWS)
			vga_pos = VGA_COLS * (VGA_ROWS - 1);
	}
	switch (c) {
	case '\n':
		vga_pos += VGA_COLS - vga_pos % VGA_COLS;
		break;
	case '\r':
		vga_pos -= vga_pos % VGA_COLS;
		break;
	case '\b':
		if (vga_pos % VGA_COLS)
			vga_pos--;
		break;
	default:
		VGA_TEXT[vga_pos++] = VGA_ATTR | (uint8_t)c;
		break;
	}
	if (vga_pos >= VGA_COLS * VGA_ROWS) {
		for (int i = 0; i < VGA_COLS * (VGA_ROWS - 1); i++)
			VGA_TEXT[i] = VGA_TEXT[i + VGA_COLS];
		for (int i = 0; i < VGA_COLS; i++)
			VGA_TEXT[VGA_COLS * (VGA_ROWS - 1) + i] = VGA_ATTR | ' ';
		vga_pos -= VGA_COLS;
	}
	vga_cursor();
}

void console_putc(char c)
{
	if (c == '\n')
		uart_putc('\r');
	uart_putc(c);
	vga_putc(c);
}

void console_write(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		console_putc(s[i]);
}

/*
 * IRQ 4, with interrupts off. Reading the data register clears the
 * "received data available" interrupt. When the ring is full we stop
 * listening (IER = 0) and leave further bytes in the UART, where the
 * sender waits for them; next_byte() listens again once there is room.
 * Re-enabling the interrupt while a byte waits raises IRQ 4 at once.
 */
void console_intr(void)
{
	while (inb(UART_LSR) & LSR_DATA_READY) {
		if (rx_write - rx_read == RX_SIZE) {
			outb(UART_IER, 0);
			rx_paused = 1;
			break;
		}
		rx[rx_write++ % RX_SIZE] = inb(UART_DATA);
	}
	wakeup(&rx_read);
}

/* Set-1 scancodes 00h-39h of a US keyboard, plain and with shift. */
static const char plain[0x3A] =
	"\0\0331234567890-=\b\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";
static const char shifted[0x3A] =
	"\0\033!@#$%^&*()_+\b\tQWERTYUIOP{}\n\0ASDFGHJKL:\"~\0|ZXCVBNM<>?\0*\0 ";

/*
 * IRQ 1, with interrupts off: each scancode in the 8042's output buffer
 * becomes a byte in the receive ring (Enter '\n', Backspace '\b', Ctrl
 * with a letter its control code); key releases only end shift and ctrl.
 */
void kbd_intr(void)
{
	while (inb(KBC_STATUS) & KBC_STATUS_OBF) {
		uint8_t sc = inb(KBC_DATA);
		uint8_t key = sc & ~SC_BREAK;
		char c;

		if (key == SC_LEFT_SHIFT || key == SC_RIGHT_SHIFT) {
			shift = !(sc & SC_BREAK);
			continue;
		}
		if (key == SC_CTRL) {
			ctrl = !(sc & SC_BREAK);
			continue;
		}
		if ((sc & SC_BREAK) || key >= sizeof(plain))
			continue;
		c = shift ? shifted[key] : plain[key];
		if (ctrl && c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 1);
		if (c && rx_write - rx_read < RX_SIZE)
			rx[rx_write++ % RX_SIZE] = (uint8_t)c;
	}
	wakeup(&rx_read);
}

/* The controller must have taken our last byte before the next. */
static void kbc_send(uint16_t port, uint8_t v)
{
	while (inb(KBC_STATUS) & KBC_STATUS_IBF)
		;
	outb(port, v);
}

void console_init(void)
{
	kbc_send(KBC_COMMAND, KBC_WRITE_COMMAND_BYTE);
	kbc_send(KBC_DATA, KBC_COMMAND_BYTE);
	/* Firmware may leave the FIFOs on with a receive trigger level of
	 * 14 bytes; a single key would then interrupt only after the
	 * 16550's character timeout. Lower the trigger to 1 byte. FCR bit 0
	 * must keep its value: changing it clears the FIFOs, and with them
	 * any input typed ahead. */
	if ((inb(UART_IIR) & IIR_FIFOS_ON) == IIR_FIFOS_ON)
		outb(UART_FCR, FCR_FIFOS_ON);
	outb(UART_MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
	outb(UART_IER, IER_RX_DATA);
	/* Bytes may have arrived before the IRQ was routed; take them now,
	 * so that the next byte raises the line afresh. */
	console_intr();
	kbd_intr();
}

/* The next received byte; sleeps until there is one. Interrupts off. */
static uint8_t next_byte(void)
{
	uint8_t c;

	while (rx_read == rx_write)
		sleep_on(&rx_read);
	c = rx[rx_read++ % RX_SIZE];
	if (rx_paused) {
		rx_paused = 0;
		outb(UART_IER, IER_RX_DATA);
	}
	return c;
}

static void erase_char(void)
{
	console_write("\b \b", 3);
	line_len--;
}

/* Reads and edits one line into `line`, echoing it. Enter is '\r' from
 * a terminal and '\n' from a file; "\r\n" counts once. */
static void edit_line(void)
{
	line_len = line_pos = 0;
	for (;;) {
		uint8_t c = next_byte();

		if (c == '\n' && after_cr) {
			after_cr = 0;
			continue;
		}
		after_cr = c == '\r';
		switch (c) {
		case '\r':
		case '\n':
			line[line_len++] = '\n';
			console_putc('\n');
			return;
		case 0x08: /* backspace */
		case 0x7F: /* delete, what most terminals send for backspace */
			if (line_len > 0)
				erase_char();
			break;
		case 0x15: /* ^U: erase the whole line */
			while (line_len > 0)
				erase_char();
			break;
		default:
			if (c >= 0x20 && c < 0x7F && line_len < LINE_MAX - 1) {
				line[line_len++] = (char)c;
				console_putc((char)c);
			}
			break;
		}
	}
}

/* Reads at most n bytes, never past the end of a line. */
int console_read(char *buf, int n)
{
	uint32_t flags = irq_save();
	int count;

	if (line_pos == line_len)
		edit_line();
	count = line_len - line_pos < n ? line_len - line_pos : n;
	memcpy(buf, line + line_pos, count);
	line_pos += count;
	irq_restore(flags);
	return count;
}
