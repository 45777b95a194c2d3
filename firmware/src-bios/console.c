/* POST's console: the 80x25 colour text screen at 0xB8000 and COM1, the
 * same two places INT 10h teletype output goes. The cursor lives where
 * INT 10h keeps it (BDA 0x450) so the runtime services continue where
 * POST stopped. */
#include "post.h"

#define TEXT_BASE 0xB8000
#define COLUMNS 80
#define ROWS 25
#define BLANK 0x0720		/* a space, light grey on black */

static void crtc_write(u8 reg, u8 value)
{
	outb(0x3D4, reg);
	outb(0x3D5, value);
}

static void cursor_update(u32 col, u32 row)
{
	u32 pos = row * COLUMNS + col;
	BDA8(BDA_CURSOR_POS) = col;
	BDA8(BDA_CURSOR_POS + 1) = row;
	crtc_write(0x0E, pos >> 8);
	crtc_write(0x0F, pos & 0xFF);
}

static void serial_putc(char c)
{
	for (u32 i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, c);
}

/* Text mode 3 (80x25, 16 colours): the hardware state ringside's text
 * device is in from reset. We record it in the BDA, clear the screen and
 * set the cursor (CRTC registers 0Ah/0Bh shape, 0Eh/0Fh position). */
void console_init(void)
{
	for (u32 i = 0; i < COLUMNS * ROWS; i++)
		PHYS16(TEXT_BASE + 2 * i) = BLANK;
	BDA8(BDA_VIDEO_MODE) = 0x03;
	BDA16(BDA_VIDEO_COLS) = COLUMNS;
	BDA16(BDA_VIDEO_PAGESZ) = 0x1000;
	BDA16(BDA_VIDEO_START) = 0;
	BDA8(BDA_VIDEO_PAGE) = 0;
	BDA16(BDA_CRTC_BASE) = 0x3D4;
	BDA8(BDA_VIDEO_ROWS) = ROWS - 1;
	BDA16(BDA_CHAR_HEIGHT) = 16;
	BDA16(BDA_CURSOR_SHAPE) = 0x0607;
	crtc_write(0x0A, 0x06);
	crtc_write(0x0B, 0x07);
	crtc_write(0x0C, 0x00);
	crtc_write(0x0D, 0x00);
	cursor_update(0, 0);
}

void console_putc(char c)
{
	u32 col = BDA8(BDA_CURSOR_POS), row = BDA8(BDA_CURSOR_POS + 1);

	serial_putc(c);
	if (c == '\r') {
		col = 0;
	} else if (c == '\n') {
		row++;
	} else {
		PHYS16(TEXT_BASE + 2 * (row * COLUMNS + col)) = 0x0700 | (u8)c;
		if (++col == COLUMNS) {
			col = 0;
			row++;
		}
	}
	if (row == ROWS) {
		for (u32 i = 0; i < COLUMNS * (ROWS - 1); i++)
			PHYS16(TEXT_BASE + 2 * i) = PHYS16(TEXT_BASE + 2 * (i + COLUMNS));
		for (u32 i = 0; i < COLUMNS; i++)
			PHYS16(TEXT_BASE + 2 * (COLUMNS * (ROWS - 1) + i)) = BLANK;
		row = ROWS - 1;
	}
	cursor_update(col, row);
}

void console_puts(const char *s)
{
	while (*s)
		console_putc(*s++);
}

void console_putdec(u32 value)
{
	char digits[10];
	int n = 0;

	do {
		digits[n++] = '0' + value % 10;
		value /= 10;
	} while (value);
	while (n)
		console_putc(digits[--n]);
}
