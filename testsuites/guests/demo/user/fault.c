/* fault: what the kernel does with a program that misbehaves. A kernel
 * pointer passed to a system call is refused; a write to kernel memory
 * raises #PF (the page is mapped, but not for ring 3), and the kernel
 * kills the process. */
#include "user.h"

int main(void)
{
	if (write(1, (const void *)0x100000, 16) == -1)
		printf("fault: write() refused a pointer into the kernel\n");
	printf("fault: writing to address 0x1000, a kernel page\n");
	*(volatile int *)0x1000 = 1;
	printf("fault: still alive, which is wrong\n");
	return 1;
}
