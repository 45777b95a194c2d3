/* Power-on self test: bring the PC's devices to the state a PC operating
 * system expects, fill in the interrupt vector table and the BIOS data
 * area, and build the tables (memory map, disk parameters, MP tables,
 * ACPI tables from fw_cfg) the
 * runtime services and the OS read. Entered from reset.S in flat 32-bit
 * protected mode with interrupts off; returns to reset.S, which goes back
 * to real mode and boots through INT 19h. */
#include "post.h"

/* The 16-bit handlers (runtime.S and its neighbours), linked at offsets
 * within segment F000. */
extern char int_default[], irq_master_default[], irq_slave_default[];
extern char int08_timer[], int09_keyboard[], int10_video[], int11_equipment[];
extern char int12_memory[], int13_disk[], int15_system[], int16_keyboard[];
extern char int18_no_boot[], int19_boot[], int1a_time[];

static void set_vector(u8 vector, void *handler)
{
	PHYS16(vector * 4) = (u16)(u32)handler;
	PHYS16(vector * 4 + 2) = BIOS_SEG;
}

static void clear(u32 addr, u32 len)
{
	for (u32 i = 0; i < len; i++)
		PHYS8(addr + i) = 0;
}

/* 8259A pair (Intel 8259A data sheet, ICW1-ICW4): edge triggered,
 * cascaded through master IR2, master vectors 0x08-0x0F and slave
 * 0x70-0x77 as on the PC/AT, 8086 mode, normal EOI. Every line but the
 * cascade stays masked until the handlers are installed. */
static void pic_init(void)
{
	outb(0x20, 0x11);
	outb(0xA0, 0x11);
	outb(0x21, 0x08);
	outb(0xA1, 0x70);
	outb(0x21, 1 << 2);
	outb(0xA1, 2);
	outb(0x21, 0x01);
	outb(0xA1, 0x01);
	outb(0x21, 0xFF & ~(1 << 2));
	outb(0xA1, 0xFF);
}

/* 8254 channel 0, mode 3 (square wave), reload value 0 = 65536:
 * 1193182 Hz / 65536 = 18.2 Hz, the BIOS tick on IRQ 0. */
static void pit_init(void)
{
	outb(0x43, 0x36);
	outb(0x40, 0x00);
	outb(0x40, 0x00);
}

/* 16550A COM1: 115200 baud (divisor 1), 8 data bits, no parity, 1 stop
 * bit, FIFOs on and cleared, DTR and RTS set, no interrupts. */
static void uart_init(void)
{
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);
	outb(COM1 + 2, 0xC7);
	outb(COM1 + 4, 0x03);
}

/* The 8042 answers in its output buffer (status bit 0) and accepts a
 * byte when its input buffer is empty (status bit 1). Bounded waits: a
 * machine without a controller still boots. */
static int kbc_wait_input_empty(void)
{
	for (u32 i = 0; i < 100000; i++)
		if (!(inb(0x64) & 0x02))
			return 1;
	return 0;
}

static int kbc_read(u8 *value)
{
	for (u32 i = 0; i < 100000; i++)
		if (inb(0x64) & 0x01) {
			*value = inb(0x60);
			return 1;
		}
	return 0;
}

static void kbc_command(u8 command)
{
	kbc_wait_input_empty();
	outb(0x64, command);
}

static void kbc_data(u8 value)
{
	kbc_wait_input_empty();
	outb(0x60, value);
}

/* 8042: self test, then the command byte: keyboard interrupt (IRQ 1) on,
 * system flag set, mouse port off, scancode translation to set 1 on;
 * then A20 on through the output port (bit 1), keeping the reset line
 * (bit 0) high. */
static void kbc_init(void)
{
	u8 reply;

	while (inb(0x64) & 0x01)
		inb(0x60);
	kbc_command(0xAA);
	if (!kbc_read(&reply) || reply != 0x55)
		console_puts("8042 self test failed\r\n");
	kbc_command(0x60);
	kbc_data(0x65);
	kbc_command(0xD1);
	kbc_data(0xDF);
	kbc_wait_input_empty();
}

/* The RTC keeps BCD unless register B bit 2 selects binary. */
static u32 rtc_value(u8 reg, u8 reg_b)
{
	u8 v = cmos_read(reg);
	return (reg_b & 0x04) ? v : (u32)(v >> 4) * 10 + (v & 0x0F);
}

/* Start the BIOS tick count at the RTC's time of day: ticks = seconds *
 * 1193182 / 65536 = seconds * (18 + 13532/65536), in 32-bit arithmetic. */
static void ticks_from_rtc(void)
{
	for (u32 i = 0; i < 1000000 && (cmos_read(0x0A) & 0x80); i++)
		;
	u8 reg_b = cmos_read(0x0B);
	u32 hour = rtc_value(0x04, reg_b);
	if (!(reg_b & 0x02) && (hour & 0x80))
		hour = (hour & 0x7F) % 12 + 12;	/* 12-hour mode, PM */
	u32 seconds = (hour * 60 + rtc_value(0x02, reg_b)) * 60 + rtc_value(0x00, reg_b);
	BDA32(BDA_TICKS) = seconds * 18 + ((seconds * 13532) >> 16);
	BDA8(BDA_MIDNIGHT) = 0;
}

static void ivt_init(void)
{
	for (u32 v = 0; v < 256; v++)
		set_vector(v, int_default);
	for (u32 v = 0x08; v < 0x10; v++)
		set_vector(v, irq_master_default);
	for (u32 v = 0x70; v < 0x78; v++)
		set_vector(v, irq_slave_default);
	set_vector(0x08, int08_timer);
	set_vector(0x09, int09_keyboard);
	set_vector(0x10, int10_video);
	set_vector(0x11, int11_equipment);
	set_vector(0x12, int12_memory);
	set_vector(0x13, int13_disk);
	set_vector(0x15, int15_system);
	set_vector(0x16, int16_keyboard);
	set_vector(0x18, int18_no_boot);
	set_vector(0x19, int19_boot);
	set_vector(0x1A, int1a_time);
	/* Pointers to parameter tables we do not have (video 1Dh, floppy
	 * 1Eh, graphics characters 1Fh, fixed disks 41h/46h) and the user
	 * vectors 60h-67h are null, as software expects of unused ones. */
	static const u8 null_vectors[] = { 0x1D, 0x1E, 0x1F, 0x41, 0x46,
		0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67 };
	for (u32 i = 0; i < sizeof(null_vectors); i++)
		PHYS32(null_vectors[i] * 4) = 0;
}

/* Virtual wire mode (MP 1.4, 3.6.2.2): the local APIC comes out of reset
 * software-disabled with LINT0 and LINT1 masked, which keeps the 8259's
 * INTR from the CPU. Enable it (spurious vector register bit 8, vector
 * FFh) and deliver LINT0 as ExtINT (the 8259 supplies the vector) and
 * LINT1 as NMI, as the MP table's local interrupt entries say. Only if
 * CPUID reports a local APIC (leaf 1, EDX bit 9). */
#define LAPIC_SVR   0xFEE000F0
#define LAPIC_LINT0 0xFEE00350
#define LAPIC_LINT1 0xFEE00360

static void lapic_virtual_wire(void)
{
	u32 eax, ebx, ecx, edx;

	__asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1));
	if (!(edx & (1 << 9)))
		return;
	PHYS32(LAPIC_SVR) = 0x1FF;
	PHYS32(LAPIC_LINT0) = 0x700;	/* ExtINT, edge, not masked */
	PHYS32(LAPIC_LINT1) = 0x400;	/* NMI, edge, not masked */
}

/* The BIOS data area fields that do not belong to one device's setup. */
static void bda_init(void)
{
	BDA16(BDA_COM_BASE) = COM1;
	BDA16(BDA_EBDA_SEG) = EBDA_SEG;
	/* Equipment: 80x25 colour (bits 5-4 = 10), one serial port (bits
	 * 11-9 = 001); no floppy, no coprocessor, no mouse. */
	BDA16(BDA_EQUIPMENT) = 0x0220;
	BDA16(BDA_MEM_KIB) = EBDA_BASE / 1024;
	BDA16(BDA_KBD_START) = BDA_KBD_BUF;
	BDA16(BDA_KBD_END) = BDA_KBD_BUF_END;
	BDA16(BDA_KBD_HEAD) = BDA_KBD_BUF;
	BDA16(BDA_KBD_TAIL) = BDA_KBD_BUF;
	BDA8(BDA_KBD_FLAGS3) = 0x10;
	EBDA8(EBDA_SIZE_KIB) = EBDA_SIZE / 1024;
}

void post_main(void)
{
	post_code(0x02);
	clear(0x400, 0x100);
	clear(EBDA_BASE, EBDA_SIZE);
	pic_init();
	pit_init();
	lapic_virtual_wire();
	post_code(0x03);
	ivt_init();
	bda_init();
	uart_init();
	console_init();
	console_puts("ringside BIOS\r\n");
	post_code(0x04);
	kbc_init();
	ticks_from_rtc();
	post_code(0x05);
	memory_map_init(acpi_init());
	post_code(0x06);
	ata_init();
	post_code(0x07);
	mptable_init();
	/* Handlers are in place: let the timer and the keyboard in. */
	outb(0x21, 0xFF & ~((1 << 0) | (1 << 1) | (1 << 2)));
	post_code(0x08);
}
