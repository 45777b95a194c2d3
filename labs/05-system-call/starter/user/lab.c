/*
 * lab.c: lab 5's test program (given: do not change it). `run lab` at
 * the demo OS's prompt runs it; `ringside lab check 5 DIR` does that and
 * reads what it printed.
 *
 * It makes the two system calls you add (syscall.h) and prints what
 * came back, one line each.
 */
#include "user.h"

int main(void)
{
	char name[32];
	int first, n;

	/* Nothing runs before main: count() is this process's first
	 * system call. */
	first = count();
	printf("count: %d\n", first);
	write(1, "...\n", 4);
	printf("count after two more calls: %d\n", count());

	memset(name, 'x', sizeof name);
	n = kname(name, sizeof name);
	printf("kname: %d \"%s\"\n", n, n >= 0 ? name : "");
	memset(name, 'x', sizeof name);
	n = kname(name, 4);
	printf("kname into 4 bytes: %d \"%s\"\n", n, n >= 0 ? name : "");
	printf("kname into 0 bytes: %d\n", kname(name, 0));

	/* A hostile or buggy program: the kernel must refuse each of these
	 * and go on. */
	printf("kname into the kernel: %d\n", kname((char *)0x00100000, 32));
	printf("kname into read-only code: %d\n", kname((char *)(uint32_t)main, 32));
	/* 32 bytes to the top: the name fits, but n = 64 does not. */
	printf("kname across the top of user space: %d\n", kname((char *)0x7fffffe0, 64));
	printf("kname at the top of memory: %d\n", kname((char *)0xfffffff0, 32));
	return 0;
}
