/*
 * irq-console: a console driven the way a teaching OS written for QEMU
 * drives it, which a machine that hands out input only when the guest
 * polls or halts never feeds:
 *
 *   - COM1 is read only in its interrupt handler: IER enables the
 *     received-data interrupt (and the transmitter-empty one, for
 *     output), nothing ever reads LSR, and MCR.OUT2 is left clear, as
 *     software tried only under QEMU leaves it (QEMU raises IRQ 4 whatever
 *     OUT2 says; a PC board gates the line with it). `out2` on the
 *     command line sets it.
 *   - The keyboard is read only in its interrupt handler (IRQ 1): one
 *     set-1 scancode from port 0x60 per interrupt (the controller
 *     translates the keyboard's set 2), turned into characters with the
 *     Shift keys followed.
 *   - The CPU idles in a busy loop with interrupts on: no HLT, ever.
 *
 * It reads lines from both, runs each as a command and answers on COM1
 * through the transmitter-empty interrupt. Commands:
 *
 *   echo TEXT      prints TEXT
 *   add A B        prints A + B
 *   fib N          prints the Nth Fibonacci number (N <= 47)
 *   count          prints how many lines came from each source
 *   exit N         stops the machine with status N (debug-exit port)
 *
 * Each line is shown as it arrived, "com1> LINE" or "kbd> LINE", and each
 * answer is "com1: ..." or "kbd: ...". The 8254 ticks at 1 kHz on IRQ 0:
 * after 20 ms with no byte from either source the guest says so and
 * exits with status 2. When a byte given to the transmitter brings no
 * THRE interrupt within 2 ms, IRQ 4 does not reach the CPU (a board that
 * gates it with OUT2, and OUT2 clear): the guest sends what it has
 * queued by polling LSR, says so, and exits with status 3.
 */
#include "guest.h"

#define PIC_MASTER 0x20
#define PIC_SLAVE 0xA0
#define ICW1_INIT_ICW4 0x11
#define ICW4_8086 0x01
#define OCW2_EOI 0x20
#define VEC_PIC_BASE 0x20
#define IRQ_TIMER 0
#define IRQ_KEYBOARD 1
#define IRQ_COM1 4

#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_CH0_RATE_GENERATOR 0x34
#define PIT_DIVISOR 1193 /* 1193182 Hz / 1000 */
#define IDLE_LIMIT_MS 20
#define THRE_LIMIT_MS 2

#define COM1 0x3F8
#define UART_RBR (COM1 + 0)
#define UART_THR (COM1 + 0)
#define UART_DLL (COM1 + 0)
#define UART_IER (COM1 + 1)
#define UART_DLM (COM1 + 1)
#define UART_IIR (COM1 + 2)
#define UART_FCR (COM1 + 2)
#define UART_LCR (COM1 + 3)
#define UART_MCR (COM1 + 4)
#define UART_LSR (COM1 + 5)
#define LSR_THR_EMPTY 0x20
#define IER_RECEIVED_DATA 0x01
#define IER_THR_EMPTY 0x02
#define IIR_NONE_PENDING 0x01
#define IIR_CAUSE 0x0E
#define IIR_THR_EMPTY 0x02
#define IIR_RECEIVED_DATA 0x04
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT2 0x08

#define KBC_DATA 0x60
#define KBC_STATUS 0x64
#define KBC_COMMAND 0x64
#define KBC_STATUS_IBF 0x02
#define KBC_WRITE_COMMAND_BYTE 0x60
/* Keyboard interrupt on, system flag, mouse port off, translation on. */
#define KBC_COMMAND_BYTE 0x65

#define SC_LEFT_SHIFT 0x2A
#define SC_RIGHT_SHIFT 0x36
#define SC_ENTER 0x1C
#define SC_BACKSPACE 0x0E
#define SC_BREAK 0x80

#define RING_BYTES 256
#define LINE_MAX 80

struct ring {
	uint8_t buf[RING_BYTES];
	volatile uint32_t head, tail;
};

static struct ring com1_in, kbd_in, com1_out;
static volatile uint32_t ticks, last_input_tick, last_send_tick;
static volatile int transmitting;
static int shift;
static uint32_t lines_from[2];

/* Called with interrupts off, or from a handler. */
static int ring_put(struct ring *r, uint8_t c)
{
	if (r->head - r->tail == RING_BYTES)
		return 0;
	r->buf[r->head++ % RING_BYTES] = c;
	return 1;
}

static int ring_take(struct ring *r)
{
	if (r->tail == r->head)
		return -1;
	return r->buf[r->tail++ % RING_BYTES];
}

static inline void cli(void)
{
	asm volatile("cli" : : : "memory");
}

static inline void sti(void)
{
	asm volatile("sti" : : : "memory");
}

static void pic_eoi(void)
{
	outb(PIC_MASTER, OCW2_EOI);
}

/* ---- COM1, by interrupt only ---- */

/* The transmitter is known to be empty (no byte sent yet, or the THRE
 * interrupt said so): send the next queued byte, if any. */
static void uart_send_next(void)
{
	int c = ring_take(&com1_out);

	transmitting = c >= 0;
	if (c >= 0) {
		outb(UART_THR, (uint8_t)c);
		last_send_tick = ticks;
	}
}

/* No THRE interrupt came for the last byte sent: IRQ 4 does not reach
 * the CPU. Send the rest by polling (only now is LSR read), and stop. */
static NORETURN void no_com1_interrupt(void)
{
	static const char why[] =
		"\nirq-console: no interrupt from COM1 (a board gating IRQ 4 with MCR.OUT2?)\n";
	int c;

	cli();
	while ((c = ring_take(&com1_out)) >= 0) {
		while (!(inb(UART_LSR) & LSR_THR_EMPTY))
			;
		outb(UART_THR, (uint8_t)c);
	}
	for (const char *p = why; *p; p++) {
		while (!(inb(UART_LSR) & LSR_THR_EMPTY))
			;
		outb(UART_THR, (uint8_t)*p);
	}
	guest_exit(3);
}

/* Called wherever the guest waits: the transmitter must not stay busy
 * for longer than a byte takes, plus the interrupt. */
static void check_transmitter(void)
{
	if (transmitting && ticks - last_send_tick > THRE_LIMIT_MS)
		no_com1_interrupt();
}

/* IRQ 4: IIR names the highest-priority cause; reading RBR clears
 * "received data", reading IIR clears "THR empty". The line is
 * edge-triggered, so keep going until IIR says nothing is pending: a
 * cause left pending keeps it high, and no new edge would ever come.
 * (Bounded, in case the UART is not there at all.) */
static void uart_interrupt(struct trapframe *tf)
{
	(void)tf;
	for (int causes = 0; causes < 4096; causes++) {
		uint8_t iir = inb(UART_IIR);

		if (iir & IIR_NONE_PENDING)
			break;
		if ((iir & IIR_CAUSE) == IIR_RECEIVED_DATA) {
			ring_put(&com1_in, inb(UART_RBR));
			last_input_tick = ticks;
		} else if ((iir & IIR_CAUSE) == IIR_THR_EMPTY) {
			uart_send_next();
		}
	}
	pic_eoi();
}

static void uart_init(int out2)
{
	/* 115200 baud, 8N1, FIFOs off (a 16450's one-byte holding
	 * register). */
	outb(UART_IER, 0);
	outb(UART_LCR, LCR_DLAB);
	outb(UART_DLL, 1);
	outb(UART_DLM, 0);
	outb(UART_LCR, LCR_8N1);
	outb(UART_FCR, 0);
	outb(UART_MCR, out2 ? MCR_DTR | MCR_RTS | MCR_OUT2 : 0);
	set_trap_handler(VEC_PIC_BASE + IRQ_COM1, uart_interrupt);
	/* Enabling THRE with the transmitter empty interrupts at once; the
	 * handler finds nothing queued yet. */
	outb(UART_IER, IER_RECEIVED_DATA | IER_THR_EMPTY);
}

/* Queue a byte for the THRE interrupt to send; start the transmitter
 * if it is idle. A full queue waits for the handler to drain it. */
static void console_putc(char c)
{
	for (;;) {
		int queued;

		cli();
		queued = ring_put(&com1_out, (uint8_t)c);
		if (!transmitting)
			uart_send_next();
		sti();
		if (queued)
			return;
		check_transmitter();
	}
}

static void console_puts(const char *s)
{
	while (*s)
		console_putc(*s++);
}

static void put_unsigned(uint32_t v)
{
	char digits[10];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		console_putc(digits[--n]);
}

/* Wait, busily, until the last byte has left. */
static void flush_output(void)
{
	while (transmitting)
		check_transmitter();
}

/* ---- the keyboard, by interrupt only ---- */

static const char plain[0x3A] =
	"\0\0331234567890-=\b\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";
static const char shifted[0x3A] =
	"\0\033!@#$%^&*()_+\b\tQWERTYUIOP{}\n\0ASDFGHJKL:\"~\0|ZXCVBNM<>?\0*\0 ";

/* IRQ 1: one scancode in the output buffer. */
static void keyboard_interrupt(struct trapframe *tf)
{
	uint8_t sc = inb(KBC_DATA);

	(void)tf;
	last_input_tick = ticks;
	if ((sc & ~SC_BREAK) == SC_LEFT_SHIFT || (sc & ~SC_BREAK) == SC_RIGHT_SHIFT)
		shift = !(sc & SC_BREAK);
	else if (!(sc & SC_BREAK) && sc < sizeof(plain)) {
		char c = shift ? shifted[sc] : plain[sc];

		if (c)
			ring_put(&kbd_in, (uint8_t)c);
	}
	pic_eoi();
}

/* The controller's input buffer must be empty before each byte we send
 * it: a status poll for IBF, not for input. */
static void kbc_send(uint16_t port, uint8_t v)
{
	while (inb(KBC_STATUS) & KBC_STATUS_IBF)
		;
	outb(port, v);
}

static void keyboard_init(void)
{
	set_trap_handler(VEC_PIC_BASE + IRQ_KEYBOARD, keyboard_interrupt);
	kbc_send(KBC_COMMAND, KBC_WRITE_COMMAND_BYTE);
	kbc_send(KBC_DATA, KBC_COMMAND_BYTE);
}

/* ---- the 8259A and the 8254 ---- */

static void timer_interrupt(struct trapframe *tf)
{
	(void)tf;
	ticks++;
	pic_eoi();
}

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
	outb(PIC_MASTER + 1,
	     (uint8_t)~(1 << IRQ_TIMER | 1 << IRQ_KEYBOARD | 1 << IRQ_COM1));
	outb(PIC_SLAVE + 1, 0xFF);
}

static void pit_init(void)
{
	set_trap_handler(VEC_PIC_BASE + IRQ_TIMER, timer_interrupt);
	outb(PIT_COMMAND, PIT_CH0_RATE_GENERATOR);
	outb(PIT_CHANNEL0, PIT_DIVISOR & 0xFF);
	outb(PIT_CHANNEL0, PIT_DIVISOR >> 8);
}

/* ---- commands ---- */

struct line {
	char text[LINE_MAX];
	int len;
};

static struct line com1_line, kbd_line;

static int starts_with(const char *s, const char *word)
{
	while (*word)
		if (*s++ != *word++)
			return 0;
	return *s == ' ' || *s == 0;
}

static const char *skip_word(const char *s)
{
	while (*s && *s != ' ')
		s++;
	while (*s == ' ')
		s++;
	return s;
}

static uint32_t parse_unsigned(const char **s)
{
	uint32_t v = 0;

	while (**s >= '0' && **s <= '9')
		v = v * 10 + (uint32_t)(*(*s)++ - '0');
	while (**s == ' ')
		(*s)++;
	return v;
}

static uint32_t fib(uint32_t n)
{
	uint32_t a = 0, b = 1;

	while (n--) {
		uint32_t next = a + b;

		a = b;
		b = next;
	}
	return a;
}

static void run_command(const char *source, int from, const char *cmd)
{
	const char *arg = skip_word(cmd);

	lines_from[from]++;
	console_puts(source);
	console_puts("> ");
	console_puts(cmd);
	console_puts("\n");
	console_puts(source);
	console_puts(": ");
	if (starts_with(cmd, "echo")) {
		console_puts(arg);
	} else if (starts_with(cmd, "add")) {
		uint32_t a = parse_unsigned(&arg);

		put_unsigned(a + parse_unsigned(&arg));
	} else if (starts_with(cmd, "fib")) {
		uint32_t n = parse_unsigned(&arg);

		if (n > 47)
			console_puts("too large");
		else
			put_unsigned(fib(n));
	} else if (starts_with(cmd, "count")) {
		put_unsigned(lines_from[0]);
		console_puts(" from com1, ");
		put_unsigned(lines_from[1]);
		console_puts(" from the keyboard");
	} else if (starts_with(cmd, "exit")) {
		uint32_t status = parse_unsigned(&arg);

		console_puts("exit ");
		put_unsigned(status);
		console_puts("\n");
		flush_output();
		guest_exit((uint8_t)status);
	} else {
		console_puts("unknown command");
	}
	console_puts("\n");
}

/* Take what the handler queued; run the line once it is complete.
 * Backspace erases; an empty line is skipped. */
static void take_input(struct ring *in, struct line *l, const char *source, int from)
{
	for (;;) {
		int c;

		cli();
		c = ring_take(in);
		sti();
		if (c < 0)
			return;
		if (c == '\r' || c == '\n') {
			if (l->len == 0)
				continue;
			l->text[l->len] = 0;
			l->len = 0;
			run_command(source, from, l->text);
		} else if (c == '\b' || c == 0x7F) {
			if (l->len > 0)
				l->len--;
		} else if (c >= ' ' && l->len < LINE_MAX - 1) {
			l->text[l->len++] = (char)c;
		}
	}
}

/* Multiboot information: flags bit 2 says the command line is there. */
struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};
#define MB_INFO_CMDLINE 0x04

static int cmdline_has(const char *word)
{
	const struct multiboot_info *mbi = (const void *)multiboot_info;
	const char *s;

	if (multiboot_magic != 0x2BADB002 || !(mbi->flags & MB_INFO_CMDLINE))
		return 0;
	for (s = (const char *)mbi->cmdline; *s; s = skip_word(s))
		if (starts_with(s, word))
			return 1;
	return 0;
}

int guest_main(void)
{
	int out2 = cmdline_has("out2");

	pic_init();
	uart_init(out2);
	keyboard_init();
	pit_init();
	sti();
	console_puts("irq-console: ready, MCR.OUT2 ");
	console_puts(out2 ? "set\n" : "clear\n");
	/* The idle loop: no HLT, no polling of a receiver. */
	for (;;) {
		take_input(&com1_in, &com1_line, "com1", 0);
		take_input(&kbd_in, &kbd_line, "kbd", 1);
		check_transmitter();
		if (ticks - last_input_tick > IDLE_LIMIT_MS) {
			console_puts("irq-console: no input for 20 ms\n");
			flush_output();
			guest_exit(2);
		}
	}
}
