#include "guest.h"
int guest_main(void)
{
	uint32_t a, b, c, d;
	cpuid(0, &a, &b, &c, &d);
	kprintf("max leaf %x vendor %x %x %x\n", a, b, d, c);
	cpuid(1, &a, &b, &c, &d);
	kprintf("leaf1 eax %x ebx %x ecx %x edx %x\n", a, b, c, d);
	cpuid(0x40000000, &a, &b, &c, &d);
	kprintf("hv leaf %x %x %x %x\n", a, b, c, d);
	kprintf("on_qemu %d cr0 %x cr4 %x\n", on_qemu(), read_cr0(), read_cr4());
	kprintf("test %llu %d %08x %#x\n", 12345678901234ULL, -5, 0xab, 0x10);
	return 0;
}
