/*
 * The labs' runtime (given, not to be changed): what a lab does not
 * handle itself ends the run with a message and status 99.
 */
#include "lab.h"

__attribute__((weak)) void gp_fault(uint32_t error, uint32_t eip)
{
	puts("unexpected #GP, error code ");
	put_hex(error);
	puts(" at ");
	put_hex(eip);
	puts("\n");
	exit(99);
}

__attribute__((weak)) void page_fault(uint32_t cr2, uint32_t error)
{
	puts("unexpected page fault at ");
	put_hex(cr2);
	puts(", error code ");
	put_hex(error);
	puts("\n");
	exit(99);
}

__attribute__((weak)) void timer_interrupt(void)
{
	puts("unexpected timer interrupt\n");
	exit(99);
}

__attribute__((weak)) void device_interrupt(void)
{
	puts("unexpected interrupt on IRQ 5\n");
	exit(99);
}
