/*
 * The labs' runtime (given, not to be changed): port I/O, control
 * registers, printing on COM1 and ending the run.
 */
#ifndef LAB_H
#define LAB_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;

#define CR0_PG 0x80000000u
#define CR4_PSE 0x00000010u

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t read_cr0(void)
{
	uint32_t v;
	__asm__ volatile("mov %%cr0, %0" : "=r"(v));
	return v;
}

static inline void write_cr0(uint32_t v)
{
	__asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}

static inline uint32_t read_cr4(void)
{
	uint32_t v;
	__asm__ volatile("mov %%cr4, %0" : "=r"(v));
	return v;
}

static inline void write_cr4(uint32_t v)
{
	__asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory");
}

static inline void write_cr3(uint32_t v)
{
	__asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

static inline void sti(void) { __asm__ volatile("sti"); }
static inline void cli(void) { __asm__ volatile("cli"); }
static inline void hlt(void) { __asm__ volatile("hlt"); }

/* One byte on COM1 (polled: wait for the transmitter to be empty). */
static inline void putc(char c)
{
	while ((inb(0x3FD) & 0x20) == 0)
		;
	outb(0x3F8, (uint8_t)c);
}

static inline void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static inline void put_dec(uint32_t v)
{
	char d[10];
	int n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		putc(d[--n]);
}

static inline void put_hex(uint32_t v)
{
	puts("0x");
	for (int i = 28; i >= 0; i -= 4)
		putc("0123456789abcdef"[(v >> i) & 15]);
}

/* End the run with `status` (ringside's debug-exit port). */
static inline void __attribute__((noreturn)) exit(uint8_t status)
{
	outb(0xF4, status);
	for (;;)
		hlt();
}

/* The handlers start.S calls; each lab defines the ones it needs (the
 * others are the weak defaults in start.S's companion, runtime.c). */
void kmain(void);
void gp_fault(uint32_t error, uint32_t eip);
void page_fault(uint32_t cr2, uint32_t error);
void timer_interrupt(void);
void device_interrupt(void);

#endif
