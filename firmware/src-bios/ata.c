/* Finding the hard disks: IDENTIFY DEVICE on the master and the slave of
 * the primary ATA channel (ATA/ATAPI-6, 8.15), and the geometry INT 13h
 * will present for each. The disks found become drives 0x80, 0x81 in
 * that order; BDA 0x475 counts them.
 *
 * INT 13h always reaches a disk by 28-bit LBA in PIO mode, so a disk
 * must support LBA (IDENTIFY word 49 bit 9). CHS requests are translated
 * to LBA with the BIOS geometry chosen here. */
#include "post.h"

/* Reading the alternate status register four times takes the 400 ns a
 * drive needs before its status is valid after a command or a select. */
static void ata_delay(void)
{
	for (int i = 0; i < 4; i++)
		inb(ATA_ALT_STATUS);
}

/* Waits for BSY to clear; returns the status, or 0xFF on timeout. */
static u8 ata_wait_not_busy(void)
{
	for (u32 i = 0; i < 1000000; i++) {
		u8 status = inb(ATA_STATUS);
		if (!(status & ATA_SR_BSY))
			return status;
	}
	return 0xFF;
}

/* BIOS geometry: the drive's own default CHS geometry (IDENTIFY words 1,
 * 3, 6) when its cylinders fit INT 13h's 10 bits; otherwise the usual
 * "LBA-assisted" translation, 63 sectors per track and the fewest heads
 * (16, 32, 64, 128, 255) that bring the cylinders to 1024 or fewer. */
static void bios_geometry(const u16 *id, u32 sectors, u32 entry)
{
	u32 cyls = id[1], heads = id[3], spt = id[6];

	if (cyls == 0 || heads == 0 || spt == 0 || cyls > 1024 || heads > 16 || spt > 63) {
		spt = 63;
		heads = 16;
		while (heads < 255 && sectors / (heads * spt) > 1024)
			heads = heads == 128 ? 255 : heads * 2;
		cyls = sectors / (heads * spt);
	}
	if (cyls > 1024)
		cyls = 1024;
	if (cyls == 0)
		cyls = 1;
	PHYS16(entry + DISK_CYLS) = cyls;
	PHYS16(entry + DISK_HEADS) = heads;
	PHYS16(entry + DISK_SPT) = spt;
}

/* IDENTIFY one drive; on success fills the next disk entry. */
static int ata_identify(u32 unit, u32 entry)
{
	u16 id[256];
	u8 status;

	outb(ATA_DRIVE, 0xA0 | unit << 4);
	ata_delay();
	status = inb(ATA_STATUS);
	if (status == 0x00 || status == 0xFF)
		return 0;	/* nothing drives the bus: no device */
	if (ata_wait_not_busy() & ATA_SR_BSY)
		return 0;
	outb(ATA_COMMAND, ATA_CMD_IDENTIFY);
	ata_delay();
	if (inb(ATA_STATUS) == 0x00)
		return 0;
	status = ata_wait_not_busy();
	if (status & (ATA_SR_BSY | ATA_SR_ERR | ATA_SR_DF) || !(status & ATA_SR_DRQ))
		return 0;	/* absent, or ATAPI (which aborts IDENTIFY DEVICE) */
	for (int i = 0; i < 256; i++)
		id[i] = inw(ATA_DATA);
	if (!(id[49] & (1 << 9))) {
		console_puts("ATA disk without LBA ignored\r\n");
		return 0;
	}
	u32 sectors = id[60] | (u32)id[61] << 16;
	PHYS8(entry + DISK_SELECT) = 0xE0 | unit << 4;
	PHYS32(entry + DISK_SECTORS) = sectors;
	bios_geometry(id, sectors, entry);
	return 1;
}

void ata_init(void)
{
	u32 count = 0;

	/* nIEN: the BIOS polls; the drive must not raise IRQ 14. */
	outb(ATA_CONTROL, 0x02);
	for (u32 unit = 0; unit < DISK_MAX; unit++) {
		u32 entry = EBDA_BASE + EBDA_DISKS + count * DISK_ENTRY;
		if (!ata_identify(unit, entry))
			continue;
		console_puts("disk ");
		console_putdec(0x80 + count);
		console_puts(unit ? " (primary slave): " : " (primary master): ");
		console_putdec(PHYS32(entry + DISK_SECTORS));
		console_puts(" sectors\r\n");
		count++;
	}
	BDA8(BDA_DISK_COUNT) = count;
}
