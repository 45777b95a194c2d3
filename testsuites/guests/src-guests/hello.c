/*
 * hello: the smallest guest. It proves the loader honoured the Multiboot
 * contract (EAX holds 0x2BADB002 at entry) and that COM1 and the
 * debug-exit port work; everything else in this directory builds on
 * those three things.
 */
#include "guest.h"

int guest_main(void)
{
	kprintf("Hello from ringside!\n");
	kprintf("guest ABI: Multiboot v1 ELF at 1 MiB, output on COM1 (0x3f8), "
		"exit status on port 0xf4\n");
	if (multiboot_magic != 0x2BADB002) {
		kprintf("hello: EAX at entry was %#x, not the Multiboot magic "
			"0x2badb002\n", multiboot_magic);
		return 1;
	}
	return 0;
}
