/*
 * ulib.c: the system call stubs and a small C library for user
 * programs.
 *
 * Each stub loads the number into EAX and the arguments into EBX, ECX
 * and EDX, and executes `int $0x80`; the kernel leaves the result in
 * EAX (syscall.h). The "memory" clobber matters: the kernel may read or
 * write the buffers we pass, so the compiler must store them before
 * the INT and reload them after.
 */
#include "user.h"

static int syscall3(int number, uint32_t a, uint32_t b, uint32_t c)
{
	int result;

	asm volatile("int %1"
		     : "=a"(result)
		     : "i"(T_SYSCALL), "a"(number), "b"(a), "c"(b), "d"(c)
		     : "memory");
	return result;
}

void exit(int status)
{
	syscall3(SYS_exit, status, 0, 0);
	for (;;)
		;
}

int write(int fd, const void *buf, int n)
{
	return syscall3(SYS_write, fd, (uint32_t)buf, n);
}

int read(int fd, void *buf, int n)
{
	return syscall3(SYS_read, fd, (uint32_t)buf, n);
}

int getpid(void)
{
	return syscall3(SYS_getpid, 0, 0, 0);
}

int yield(void)
{
	return syscall3(SYS_yield, 0, 0, 0);
}

int sleep(int ticks)
{
	return syscall3(SYS_sleep, ticks, 0, 0);
}

void *sbrk(int increment)
{
	return (void *)syscall3(SYS_sbrk, increment, 0, 0);
}

/* REP MOVSB/STOSB rather than C loops: GCC would turn a byte loop back
 * into a call to memcpy or memset, that is, to itself. */
void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;

	asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;

	asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p < *q ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

/* Formats into a buffer, then makes one write() of it. */
int printf(const char *fmt, ...)
{
	char out[256], digits[12];
	int len = 0;
	__builtin_va_list ap;

	__builtin_va_start(ap, fmt);
	for (; *fmt && len < (int)sizeof(out); fmt++) {
		int width = 0, n = 0, negative = 0;
		char pad = ' ';
		uint32_t u, base = 10;
		const char *s;

		if (*fmt != '%') {
			out[len++] = *fmt;
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (!*fmt)
			break;
		switch (*fmt) {
		case 's':
			for (s = __builtin_va_arg(ap, const char *); *s && len < (int)sizeof(out); s++)
				out[len++] = *s;
			continue;
		case 'c':
			out[len++] = (char)__builtin_va_arg(ap, int);
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
		case 'x':
			u = __builtin_va_arg(ap, uint32_t);
			base = 16;
			break;
		default:
			out[len++] = *fmt;
			continue;
		}
		do {
			digits[n++] = "0123456789abcdef"[u % base];
			u /= base;
		} while (u);
		if (negative)
			digits[n++] = '-';
		for (; width > n && len < (int)sizeof(out); width--)
			out[len++] = pad;
		while (n > 0 && len < (int)sizeof(out))
			out[len++] = digits[--n];
	}
	__builtin_va_end(ap);
	return write(1, out, len);
}
