/*
 * printf.c: formatted output for the kernel, and panic.
 *
 * One formatter serves kprintf (to the console) and snprintf (into a
 * buffer). It knows %s %c %d %u %x %p %%, a '-' (left-justify) or '0'
 * (zero-pad) flag and a field width: what the kernel's messages need,
 * and nothing that divides 64-bit numbers (there is no libgcc).
 */
#include "kernel.h"

struct sink {
	char *buf; /* NULL: write to the console */
	int size, len;
};

static void put(struct sink *s, char c)
{
	if (!s->buf)
		console_putc(c);
	else if (s->len < s->size - 1)
		s->buf[s->len] = c;
	s->len++;
}

static void put_field(struct sink *s, const char *text, int len, int width,
		      int left, char pad)
{
	if (!left)
		for (int i = len; i < width; i++)
			put(s, pad);
	for (int i = 0; i < len; i++)
		put(s, text[i]);
	if (left)
		for (int i = len; i < width; i++)
			put(s, ' ');
}

static void format(struct sink *s, const char *fmt, __builtin_va_list ap)
{
	char digits[12];

	for (; *fmt; fmt++) {
		int left = 0, width = 0, len = 0, negative = 0;
		char pad = ' ';
		uint32_t u, base = 10;

		if (*fmt != '%') {
			put(s, *fmt);
			continue;
		}
		fmt++;
		if (*fmt == '-') {
			left = 1;
			fmt++;
		}
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (!*fmt)
			break;
		switch (*fmt) {
		case 's': {
			const char *str = __builtin_va_arg(ap, const char *);

			put_field(s, str, strlen(str), width, left, ' ');
			continue;
		}
		case 'c':
			digits[0] = (char)__builtin_va_arg(ap, int);
			put_field(s, digits, 1, width, left, ' ');
			continue;
		case 'd': {
			int v = __builtin_va_arg(ap, int);

			negative = v < 0;
			u = negative ? -(uint32_t)v : (uint32_t)v;
			break;
		}
		case 'u':
			u = __builtin_va_arg(ap, uint32_t);
			break;
		case 'p':
			put(s, '0');
			put(s, 'x');
			/* fall through */
		case 'x':
			u = __builtin_va_arg(ap, uint32_t);
			base = 16;
			break;
		case '%':
			put(s, '%');
			continue;
		default:
			put(s, '%');
			put(s, *fmt);
			continue;
		}
		/* Digits come out least significant first; store them from
		 * the end of the buffer. */
		do {
			digits[sizeof(digits) - 1 - len++] = "0123456789abcdef"[u % base];
			u /= base;
		} while (u);
		if (negative)
			digits[sizeof(digits) - 1 - len++] = '-';
		put_field(s, digits + sizeof(digits) - len, len, width, left, pad);
	}
}

void kprintf(const char *fmt, ...)
{
	struct sink s = { NULL, 0, 0 };
	__builtin_va_list ap;

	__builtin_va_start(ap, fmt);
	format(&s, fmt, ap);
	__builtin_va_end(ap);
}

/* Like C's snprintf: always NUL-terminates, returns the full length. */
int snprintf(char *buf, int size, const char *fmt, ...)
{
	struct sink s = { buf, size, 0 };
	__builtin_va_list ap;

	__builtin_va_start(ap, fmt);
	format(&s, fmt, ap);
	__builtin_va_end(ap);
	buf[s.len < size ? s.len : size - 1] = '\0';
	return s.len;
}

/* Something the kernel relies on turned out false: say what, and stop
 * the machine with a status the emulator reports (1, not 0). */
NORETURN void panic(const char *fmt, ...)
{
	struct sink s = { NULL, 0, 0 };
	__builtin_va_list ap;

	cli();
	kprintf("panic: ");
	__builtin_va_start(ap, fmt);
	format(&s, fmt, ap);
	__builtin_va_end(ap);
	kprintf("\n");
	poweroff(1);
}
