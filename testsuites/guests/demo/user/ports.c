/*
 * ports: 100000 OUTs to port 0x80 (the POST code port) from ring 3.
 *
 * With IOPL 0, an OUT in ring 3 would raise #GP, unless the TSS's I/O
 * permission bitmap has a 0 for the port (SDM Vol. 1 19.5.2). The kernel
 * clears the bit for port 0x80 only (kernel/desc.c), so each OUT here is
 * checked by the CPU against the bitmap and runs without a system call:
 * what this measures is the port write, not the trip into the kernel.
 */
#include "user.h"

#define WRITES 100000

static inline void outb(unsigned short port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

int main(void)
{
	for (int i = 0; i < WRITES; i++)
		outb(0x80, (uint8_t)i);
	printf("ports: %d writes to port 0x80 from ring 3\n", WRITES);
	return 0;
}
