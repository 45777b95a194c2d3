/*
 * reboot: a guest that resets the PC three times, once by each of the
 * ways a PC has, and counts its boots where a reset does not reach.
 *
 * A PC restarts from the reset vector when the CPU's RESET line is
 * pulsed: by the 8042 keyboard controller (command 0xFE pulses output
 * port bit 0; the PC/AT Technical Reference), by the "fast reset" bit 0
 * of port 0x92 (PIIX4 data sheet, "Port 92h", on a 0-to-1 transition),
 * and by the chipset when the CPU shuts down after a triple fault (SDM
 * Vol. 3A 6.15, interrupt 8: a fault while delivering #DF). RAM and the
 * battery-backed CMOS RAM keep their contents across a reset, so the
 * guest keeps its boot count in both: a CMOS byte no BIOS uses, and a
 * marker in RAM outside this image (which the loader writes again).
 *
 * Boot 1 resets through the 8042, boot 2 through port 0x92, boot 3 by a
 * triple fault, and boot 4 checks that both counts agree and exits 0.
 * `first=N` on the Multiboot command line (N = 1-4) starts the sequence
 * at step N, so a machine that does not reboot can be shown each way of
 * resetting: `first=3` triple-faults on the first boot and exits 0 on
 * the second.
 *
 * Exit statuses: 0 all well; 10 + n the counts disagree on boot n; 20 +
 * n the reset requested on boot n did not happen (the guest ran on).
 */
#include "guest.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
/* Bytes 0x10-0x2D are the checksummed configuration, 0x30-0x3F and
 * 0x5B-0x5F are used by BIOSes (SeaBIOS among them); 0x7D is free. */
#define CMOS_BOOT_COUNT 0x7D

#define KBC_COMMAND 0x64
#define KBC_PULSE_RESET 0xFE
#define SYSTEM_CONTROL_PORT_A 0x92
#define FAST_RESET 0x01

/* In extended memory above this image and below 2 MiB, where no loader
 * puts anything. (Not in conventional memory: QEMU's firmware does not
 * keep it across a reset; the marker at 0x80000 read 0 after one.) */
#define MARKER_ADDRESS 0x1F0000
#define MARKER_MAGIC 0x544F4F42 /* "BOOT" */

struct marker {
	uint32_t magic;
	uint32_t boots;
};

/* The Multiboot information (Multiboot 0.6.96, 3.3): flags bit 2 says
 * the command line is there. */
#define MB_INFO_CMDLINE 0x004
struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

/* The step the first boot takes: N from `first=N` among the words of the
 * command line, or 1. */
static unsigned first_step(void)
{
	const struct multiboot_info *mbi = (const void *)multiboot_info;
	if (multiboot_magic != 0x2BADB002 || !(mbi->flags & MB_INFO_CMDLINE))
		return 1;
	for (const char *p = (const char *)mbi->cmdline; *p; p++) {
		int word_start = p == (const char *)mbi->cmdline || p[-1] == ' ';
		if (word_start && !memcmp(p, "first=", 6) && p[6] >= '1' &&
		    p[6] <= '4')
			return p[6] - '0';
	}
	return 1;
}

static uint8_t cmos_read(uint8_t reg)
{
	outb(CMOS_INDEX, reg);
	return inb(CMOS_DATA);
}

static void cmos_write(uint8_t reg, uint8_t v)
{
	outb(CMOS_INDEX, reg);
	outb(CMOS_DATA, v);
}

/* A reset takes effect at once on ringside; QEMU may run a few more
 * instructions before it resets, so wait a while before calling the
 * request ignored. */
static NORETURN void reset_did_not_happen(unsigned boot)
{
	for (volatile uint32_t i = 0; i < 10000000; i++)
		;
	kprintf("reboot: the reset requested on boot %u did not happen\n", boot);
	guest_exit(20 + boot);
}

static void reset_by_keyboard_controller(void)
{
	/* Wait for the controller's input buffer to be empty (status bit
	 * 1), as a driver must before it writes a command. */
	for (int i = 0; i < 100000 && (inb(KBC_COMMAND) & 0x02); i++)
		;
	outb(KBC_COMMAND, KBC_PULSE_RESET);
}

static void reset_by_port_92(void)
{
	/* Bit 0 must go from 0 to 1; bit 1 (A20) stays as it is. */
	uint8_t v = inb(SYSTEM_CONTROL_PORT_A) & ~FAST_RESET;
	outb(SYSTEM_CONTROL_PORT_A, v);
	outb(SYSTEM_CONTROL_PORT_A, v | FAST_RESET);
}

static void reset_by_triple_fault(void)
{
	/* With an empty IDT, the #UD of UD2 cannot be delivered (#GP), nor
	 * can the #GP, which makes a #DF, which cannot be delivered either:
	 * the CPU shuts down. */
	static const struct __attribute__((packed)) {
		uint16_t limit;
		uint32_t base;
	} empty_idt = { 0, 0 };
	__asm__ volatile("lidt %0\n\tud2" : : "m"(empty_idt));
}

int guest_main(void)
{
	volatile struct marker *marker = (volatile struct marker *)MARKER_ADDRESS;
	unsigned cmos_boots = cmos_read(CMOS_BOOT_COUNT);
	unsigned ram_boots = marker->magic == MARKER_MAGIC ? marker->boots : 0;
	unsigned boot = cmos_boots + 1;

	kprintf("reboot: boot %u (CMOS counted %u, RAM counted %u)\n", boot,
		cmos_boots, ram_boots);
	if (ram_boots != cmos_boots)
		return 10 + boot;
	cmos_write(CMOS_BOOT_COUNT, boot);
	marker->magic = MARKER_MAGIC;
	marker->boots = boot;

	switch (boot + first_step() - 1) {
	case 1:
		kprintf("reboot: resetting through the 8042 (command 0xfe)\n");
		reset_by_keyboard_controller();
		break;
	case 2:
		kprintf("reboot: resetting through port 0x92 bit 0\n");
		reset_by_port_92();
		break;
	case 3:
		kprintf("reboot: resetting by a triple fault\n");
		reset_by_triple_fault();
		break;
	default:
		kprintf("reboot: booted %u times, done\n", boot);
		return boot + first_step() - 1 == 4 ? 0 : 10 + boot;
	}
	reset_did_not_happen(boot);
}
