/*
 * serial.c: output on COM1 and the debug-exit port.
 *
 * We do not program the UART: the loader (QEMU's firmware, or ringside)
 * leaves COM1 ready, and a guest that reprograms the divisor tests more
 * of the UART model than it means to.
 */
#include "guest.h"

#define COM1 0x3F8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20 /* transmit holding register empty */
#define DEBUG_EXIT_PORT 0xF4
#define BOCHS_SHUTDOWN_PORT 0x8900

void serial_putc(char c)
{
	while ((inb(COM1_LSR) & LSR_THRE) == 0)
		;
	outb(COM1, (uint8_t)c);
}

/* Under QEMU's isa-debug-exit the process exits with (status << 1) | 1;
 * ringside exits with status itself. A PC with no debug-exit port goes
 * on: "Shutdown" written to port 8900h, the Bochs BIOS's power-off port,
 * ends Bochs (the status is lost there); elsewhere the CPU halts. */
NORETURN void guest_exit(uint8_t status)
{
	outb(DEBUG_EXIT_PORT, status);
	for (const char *s = "Shutdown"; *s; s++)
		outb(BOCHS_SHUTDOWN_PORT, (uint8_t)*s);
	for (;;)
		asm volatile("cli; hlt");
}

static void put_padded(const char *digits, int len, int width, char pad)
{
	for (; width > len; width--)
		serial_putc(pad);
	while (len > 0)
		serial_putc(digits[--len]);
}

/* Writes the digits of v in base `base`, least significant first. The
 * 64-bit division is what pulls in __udivdi3/__umoddi3 (string.c). */
static int format_digits(char *buf, uint64_t v, unsigned base)
{
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	return n;
}

/*
 * A printf for diagnostics: %s %c %d %u %x %p %%, with an optional '#'
 * (0x prefix), '0' flag, field width and 'll' length.
 */
void kprintf(const char *fmt, ...)
{
	__builtin_va_list ap;
	char buf[24];

	__builtin_va_start(ap, fmt);
	for (; *fmt; fmt++) {
		int alt = 0, width = 0, longlong = 0;
		char pad = ' ';
		uint64_t u;

		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '#') {
			alt = 1;
			fmt++;
		}
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			longlong = 1;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = __builtin_va_arg(ap, const char *);
			int len = 0;

			while (s[len])
				len++;
			for (; width > len; width--)
				serial_putc(' ');
			while (*s)
				serial_putc(*s++);
			break;
		}
		case 'c':
			serial_putc((char)__builtin_va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = longlong ? __builtin_va_arg(ap, int64_t)
					     : __builtin_va_arg(ap, int);
			if (v < 0) {
				serial_putc('-');
				v = -v;
			}
			put_padded(buf, format_digits(buf, (uint64_t)v, 10), width, pad);
			break;
		}
		case 'u':
			u = longlong ? __builtin_va_arg(ap, uint64_t)
				     : __builtin_va_arg(ap, uint32_t);
			put_padded(buf, format_digits(buf, u, 10), width, pad);
			break;
		case 'p':
			alt = 1;
			/* fall through */
		case 'x':
			u = longlong ? __builtin_va_arg(ap, uint64_t)
				     : __builtin_va_arg(ap, uint32_t);
			if (alt) {
				serial_putc('0');
				serial_putc('x');
				width -= 2;   /* as in C: the width includes "0x" */
			}
			put_padded(buf, format_digits(buf, u, 16), width, pad);
			break;
		case '%':
			serial_putc('%');
			break;
		default:
			serial_putc('%');
			serial_putc(*fmt);
			break;
		}
	}
	__builtin_va_end(ap);
}
