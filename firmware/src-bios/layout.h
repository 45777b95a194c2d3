/* Where the BIOS keeps things: the ROM's segment, the BIOS data area
 * (BDA) fields it maintains, and its own layout of the extended BIOS
 * data area (EBDA). Shared by the 16-bit assembly (runtime services) and
 * the 32-bit C (POST), so it holds only #defines.
 *
 * The ROM is never written: every variable lives in the BDA (segment
 * 0x40, the fields IBM defined) or in the 1 KiB EBDA at 0x9FC00 (our
 * own layout, below). The runtime services find the EBDA through the
 * BDA word at 0x40E, so an OS that moves the EBDA and updates that word
 * keeps them working. */
#ifndef LAYOUT_H
#define LAYOUT_H

/* The ROM: 64 KiB at F000:0000 = linear 0xF0000 (and 0xFFFF0000). */
#define BIOS_SEG        0xF000
#define BIOS_BASE       0xF0000

/* BIOS data area, segment 0x40. Offsets are relative to 0x400. */
#define BDA_SEG         0x40
#define BDA_COM_BASE    0x00    /* word[4]: COM1-COM4 I/O base */
#define BDA_EBDA_SEG    0x0E    /* word: EBDA segment */
#define BDA_EQUIPMENT   0x10    /* word: INT 11h equipment list */
#define BDA_MEM_KIB     0x13    /* word: base memory in KiB (INT 12h) */
#define BDA_KBD_FLAGS1  0x17    /* byte: shift, ctrl, alt, lock states */
#define BDA_KBD_FLAGS2  0x18    /* byte: lock keys held down */
#define BDA_KBD_HEAD    0x1A    /* word: next key to read (offset in segment 0x40) */
#define BDA_KBD_TAIL    0x1C    /* word: next free slot */
#define BDA_KBD_BUF     0x1E    /* word[16]: the ring buffer */
#define BDA_KBD_BUF_END 0x3E
#define BDA_VIDEO_MODE  0x49    /* byte */
#define BDA_VIDEO_COLS  0x4A    /* word */
#define BDA_VIDEO_PAGESZ 0x4C   /* word: bytes per page */
#define BDA_VIDEO_START 0x4E    /* word: offset of the active page */
#define BDA_CURSOR_POS  0x50    /* byte pairs [8]: column, row per page */
#define BDA_CURSOR_SHAPE 0x60   /* word: end line (low), start line (high) */
#define BDA_VIDEO_PAGE  0x62    /* byte: active page */
#define BDA_CRTC_BASE   0x63    /* word: 0x3D4 */
#define BDA_TICKS       0x6C    /* dword: timer ticks since midnight */
#define BDA_MIDNIGHT    0x70    /* byte: the tick count wrapped past midnight */
#define BDA_DISK_STATUS 0x74    /* byte: status of the last INT 13h call */
#define BDA_DISK_COUNT  0x75    /* byte: number of hard disks */
#define BDA_KBD_START   0x80    /* word: ring buffer start offset */
#define BDA_KBD_END     0x82    /* word: ring buffer end offset */
#define BDA_VIDEO_ROWS  0x84    /* byte: rows - 1 */
#define BDA_CHAR_HEIGHT 0x85    /* word: scan lines per character */
#define BDA_KBD_FLAGS3  0x96    /* byte: bit 1 = last scancode was E0, bit 4 = 101-key keyboard */

#define TICKS_PER_DAY   0x1800B0  /* 86400 s * 1193180 Hz / 65536 */

/* Extended BIOS data area: 1 KiB below 640 KiB. Offsets from its start. */
#define EBDA_SEG        0x9FC0
#define EBDA_BASE       0x9FC00
#define EBDA_SIZE       0x400
#define EBDA_SIZE_KIB   0x000   /* byte: EBDA size in KiB (1), by convention */
#define EBDA_MP_FLOAT   0x010   /* MP floating pointer (16 bytes, 16-aligned) */
#define EBDA_MP_CONFIG  0x020   /* MP configuration table (0xD8 bytes) */
#define EBDA_E820_COUNT 0x100   /* word: entries in the memory map */
#define EBDA_E801_LOW   0x102   /* word: KiB between 1 MiB and 16 MiB */
#define EBDA_E801_HIGH  0x104   /* word: 64 KiB blocks above 16 MiB */
#define EBDA_EXT_KIB    0x106   /* word: KiB above 1 MiB for AH=88h (at most 0xFFFF) */
#define EBDA_E820_MAP   0x108   /* E820_MAX entries of 20 bytes */
#define E820_MAX        8
#define E820_ENTRY      20
#define EBDA_DISKS      0x1B0   /* DISK_MAX entries of DISK_ENTRY bytes */
#define DISK_MAX        2
#define DISK_ENTRY      16
/* One disk entry: how INT 13h reaches the drive and the geometry it reports. */
#define DISK_SELECT     0       /* byte: drive/head register for LBA (0xE0 master, 0xF0 slave) */
#define DISK_CYLS       2       /* word: BIOS cylinders (at most 1024) */
#define DISK_HEADS      4       /* word: BIOS heads */
#define DISK_SPT        6       /* word: BIOS sectors per track */
#define DISK_SECTORS    8       /* dword: total sectors (28-bit LBA) */

/* The stack POST runs on: free conventional memory below the boot sector. */
#define POST_STACK_TOP  0x7000

/* Primary ATA channel. */
#define ATA_DATA        0x1F0
#define ATA_ERROR       0x1F1
#define ATA_COUNT       0x1F2
#define ATA_LBA0        0x1F3
#define ATA_LBA1        0x1F4
#define ATA_LBA2        0x1F5
#define ATA_DRIVE       0x1F6
#define ATA_STATUS      0x1F7
#define ATA_COMMAND     0x1F7
#define ATA_ALT_STATUS  0x3F6
#define ATA_CONTROL     0x3F6
#define ATA_SR_BSY      0x80
#define ATA_SR_DF       0x20
#define ATA_SR_DRQ      0x08
#define ATA_SR_ERR      0x01
#define ATA_CMD_READ    0x20
#define ATA_CMD_WRITE   0x30
#define ATA_CMD_IDENTIFY 0xEC

#define COM1            0x3F8

/* Protected-mode selectors of the GDT that POST uses (reset.S). */
#define SEL_CODE32      0x08
#define SEL_DATA32      0x10
#define SEL_CODE16      0x18
#define SEL_DATA16      0x20

#endif
