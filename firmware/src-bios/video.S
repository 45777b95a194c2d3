/* INT 10h, video services, for the 80x25 colour text mode (mode 3) at
 * B800:0000. Every character written by the teletype (AH=0Eh) also goes
 * to COM1, so a machine without a screen shows the same text.
 *
 * Only page 0 is displayed and written; the cursor of each page is kept
 * in the BDA (0x450) as software expects. The hardware cursor is the
 * CRTC's (ports 3D4h/3D5h, registers 0Ah/0Bh shape, 0Eh/0Fh position). */
#include "layout.h"
#include "frame.h"

#define TEXT_SEG 0xB800
#define COLUMNS 80
#define ROWS 25

	.section .text16, "ax"
	.code16

	.globl int10_video
int10_video:
	cld
	SERVICE_ENTER
	mov	$BDA_SEG, %bx
	mov	%bx, %ds
	mov	$TEXT_SEG, %bx
	mov	%bx, %es
	mov	F_BX(%bp), %bx
	cmp	$0x0E, %ah
	je	v_teletype
	cmp	$0x00, %ah
	je	v_set_mode
	cmp	$0x01, %ah
	je	v_cursor_shape
	cmp	$0x02, %ah
	je	v_set_cursor
	cmp	$0x03, %ah
	je	v_get_cursor
	cmp	$0x06, %ah
	je	v_scroll
	cmp	$0x07, %ah
	je	v_scroll
	cmp	$0x08, %ah
	je	v_read_char
	cmp	$0x09, %ah
	je	v_write_char
	cmp	$0x0A, %ah
	je	v_write_char
	cmp	$0x0F, %ah
	je	v_get_mode
	cmp	$0x12, %ah
	je	v_ega_info
	cmp	$0x1A, %ah
	je	v_display_code
v_done:
	SERVICE_RETURN

/* AH=0Eh: AL = character. BEL, BS, LF and CR act; others are written
 * at the cursor, which advances, wrapping and scrolling. */
v_teletype:
	call	video_teletype
	jmp	v_done

/* AH=00h: any mode number gives text mode 3, cleared unless AL bit 7. */
v_set_mode:
	test	$0x80, %al
	jnz	1f
	xor	%di, %di
	mov	$0x0720, %ax
	mov	$COLUMNS * ROWS, %cx
	rep stosw
1:	movb	$0x03, BDA_VIDEO_MODE
	mov	$BDA_CURSOR_POS, %di
	push	%ds
	pop	%es
	xor	%ax, %ax
	mov	$8, %cx
	rep stosw
	call	video_sync_cursor
	jmp	v_done

/* AH=01h: CH = start scan line, CL = end scan line. */
v_cursor_shape:
	mov	%cx, BDA_CURSOR_SHAPE
	mov	$0x0A, %al
	mov	%ch, %ah
	call	crtc_write
	mov	$0x0B, %al
	mov	%cl, %ah
	call	crtc_write
	jmp	v_done

/* AH=02h: BH = page, DH = row, DL = column. */
v_set_cursor:
	movzbw	%bh, %bx
	and	$7, %bx
	shl	$1, %bx
	mov	%dx, BDA_CURSOR_POS(%bx)
	test	%bx, %bx
	jnz	v_done
	call	video_sync_cursor
	jmp	v_done

/* AH=03h: BH = page; returns DH, DL = row, column and CX = shape. */
v_get_cursor:
	movzbw	%bh, %bx
	and	$7, %bx
	shl	$1, %bx
	mov	BDA_CURSOR_POS(%bx), %ax
	mov	%ax, F_DX(%bp)
	mov	BDA_CURSOR_SHAPE, %ax
	mov	%ax, F_CX(%bp)
	jmp	v_done

/* AH=06h up, 07h down: AL = lines (0 = clear), BH = attribute for the
 * new lines, CH,CL = top-left row,column, DH,DL = bottom-right. */
v_scroll:
	movzbw	%ah, %si
	sub	$0x06, %si
	call	video_scroll
	jmp	v_done

/* AH=08h: AH,AL = attribute, character at the cursor. */
v_read_char:
	mov	BDA_CURSOR_POS, %dx
	call	cursor_offset
	mov	%es:(%di), %ax
	mov	%ax, F_AX(%bp)
	jmp	v_done

/* AH=09h: write AL with attribute BL, CX times, from the cursor;
 * AH=0Ah: the same keeping the attributes. The cursor does not move. */
v_write_char:
	mov	%ah, %bh
	mov	BDA_CURSOR_POS, %dx
	call	cursor_offset
	mov	$COLUMNS * ROWS * 2, %si
	sub	%di, %si
	shr	$1, %si			/* cells left on the screen */
	cmp	%si, %cx
	jbe	1f
	mov	%si, %cx
1:	cmp	$0x0A, %bh
	je	2f
	mov	%bl, %ah
	rep stosw
	jmp	v_done
2:	test	%cx, %cx
	jz	v_done
	mov	%al, %es:(%di)
	add	$2, %di
	dec	%cx
	jmp	2b

/* AH=0Fh: AL = mode, AH = columns, BH = active page. */
v_get_mode:
	mov	BDA_VIDEO_MODE, %al
	mov	BDA_VIDEO_COLS, %ah
	mov	%ax, F_AX(%bp)
	mov	BDA_VIDEO_PAGE, %al
	mov	%al, F_BX + 1(%bp)
	jmp	v_done

/* AH=12h BL=10h: EGA information: colour, 256 KiB, switches 9. */
v_ega_info:
	cmp	$0x10, %bl
	jne	v_done
	movw	$0x0003, F_BX(%bp)
	movw	$0x0009, F_CX(%bp)
	jmp	v_done

/* AH=1Ah AL=00h: display combination code: VGA with colour display. */
v_display_code:
	test	%al, %al
	jnz	v_done
	movb	$0x1A, F_AX(%bp)
	movw	$0x0008, F_BX(%bp)
	jmp	v_done

/* DL = column, DH = row -> DI = offset of that cell in the text buffer.
 * Preserves everything else. */
cursor_offset:
	push	%ax
	movzbw	%dh, %di
	imul	$COLUMNS, %di, %di
	movzbw	%dl, %ax
	add	%ax, %di
	shl	$1, %di
	pop	%ax
	ret

/* Points the CRTC's cursor at page 0's cursor from the BDA. DS = BDA.
 * Clobbers AX, BX, DX. */
video_sync_cursor:
	mov	BDA_CURSOR_POS, %ax
	movzbw	%al, %bx
	movzbw	%ah, %ax
	imul	$COLUMNS, %ax, %ax
	add	%ax, %bx
	mov	$0x0E, %al
	mov	%bh, %ah
	call	crtc_write
	mov	$0x0F, %al
	mov	%bl, %ah
	call	crtc_write
	ret

/* CRTC register AL = AH, through the index (3D4h) and data (3D5h) ports.
 * Clobbers AL, DX. */
crtc_write:
	mov	$0x3D4, %dx
	out	%al, %dx
	inc	%dx
	mov	%ah, %al
	out	%al, %dx
	ret

/* Sends AL to COM1 once its transmitter holding register is empty (LSR
 * bit 5), giving up after 65536 polls so a missing UART cannot hang the
 * screen output. Preserves AL. Clobbers AH. */
	.globl serial_putc
serial_putc:
	push	%cx
	push	%dx
	mov	%al, %ah
	mov	$COM1 + 5, %dx
	mov	$0xFFFF, %cx
1:	in	%dx, %al
	test	$0x20, %al
	jnz	2f
	loop	1b
2:	mov	$COM1, %dx
	mov	%ah, %al
	out	%al, %dx
	pop	%dx
	pop	%cx
	ret

/* The teletype: AL = character. DS = BDA, ES = text buffer. Clobbers
 * every general register but BP. */
video_teletype:
	call	serial_putc
	mov	BDA_CURSOR_POS, %dx
	cmp	$0x0D, %al
	je	4f
	cmp	$0x0A, %al
	je	2f
	cmp	$0x08, %al
	je	5f
	cmp	$0x07, %al
	je	6f
	call	cursor_offset
	mov	%al, %es:(%di)		/* the cell keeps its attribute */
	inc	%dl
	cmp	$COLUMNS, %dl
	jb	3f
	xor	%dl, %dl
2:	inc	%dh
	cmp	$ROWS, %dh
	jb	3f
	mov	$ROWS - 1, %dh
	push	%dx
	mov	$1, %al
	mov	$0x07, %bh
	xor	%cx, %cx
	mov	$((ROWS - 1) << 8) | (COLUMNS - 1), %dx
	xor	%si, %si
	call	video_scroll
	pop	%dx
	jmp	3f
4:	xor	%dl, %dl
	jmp	3f
5:	test	%dl, %dl
	jz	3f
	dec	%dl
3:	mov	%dx, BDA_CURSOR_POS
	call	video_sync_cursor
6:	ret

/* Scrolls a window of the screen. AL = lines (0, or more than the window
 * has, clears it), BH = attribute of the blank lines, CH,CL = top row,
 * left column, DH,DL = bottom row, right column, SI = 0 up, 1 down.
 * ES = text buffer. Clobbers AX, BX, CX, DX, SI, DI. */
#define S_LINES  -2(%bp)
#define S_BLANK  -4(%bp)
#define S_LEFT   -6(%bp)
#define S_WIDTH  -8(%bp)
#define S_TOP    -10(%bp)
#define S_BOTTOM -12(%bp)
video_scroll:
	push	%bp
	mov	%sp, %bp
	sub	$12, %sp
	push	%ds
	movzbw	%al, %ax
	mov	%ax, S_LINES
	mov	%bh, %ah
	mov	$' ', %al
	mov	%ax, S_BLANK
	cmp	$ROWS - 1, %dh
	jbe	1f
	mov	$ROWS - 1, %dh
1:	cmp	$COLUMNS - 1, %dl
	jbe	1f
	mov	$COLUMNS - 1, %dl
1:	cmp	%dh, %ch
	ja	9f
	cmp	%dl, %cl
	ja	9f
	movzbw	%cl, %ax
	mov	%ax, S_LEFT
	movzbw	%dl, %ax
	sub	S_LEFT, %ax
	inc	%ax
	mov	%ax, S_WIDTH
	movzbw	%ch, %ax
	mov	%ax, S_TOP
	movzbw	%dh, %ax
	mov	%ax, S_BOTTOM
	sub	S_TOP, %ax
	inc	%ax			/* AX = height */
	mov	S_LINES, %cx
	jcxz	1f
	cmp	%ax, %cx
	jbe	2f
1:	mov	%ax, S_LINES
2:	mov	%es, %ax
	mov	%ax, %ds
	test	%si, %si
	jnz	5f
	mov	S_TOP, %dx		/* up: row by row from the top */
3:	cmp	S_BOTTOM, %dx
	jg	9f
	mov	%dx, %bx
	add	S_LINES, %bx
	cmp	S_BOTTOM, %bx
	jg	4f
	call	scroll_copy_row
	inc	%dx
	jmp	3b
4:	call	scroll_blank_row
	inc	%dx
	jmp	3b
5:	mov	S_BOTTOM, %dx		/* down: row by row from the bottom */
6:	cmp	S_TOP, %dx
	jl	9f
	mov	%dx, %bx
	sub	S_LINES, %bx
	cmp	S_TOP, %bx
	jl	7f
	call	scroll_copy_row
	dec	%dx
	jmp	6b
7:	call	scroll_blank_row
	dec	%dx
	jmp	6b
9:	pop	%ds
	mov	%bp, %sp
	pop	%bp
	ret

/* Within video_scroll (its BP): copy row BX to row DX, or blank row DX,
 * between the window's columns. */
scroll_copy_row:
	imul	$COLUMNS, %dx, %di
	add	S_LEFT, %di
	shl	$1, %di
	imul	$COLUMNS, %bx, %si
	add	S_LEFT, %si
	shl	$1, %si
	mov	S_WIDTH, %cx
	rep movsw
	ret

scroll_blank_row:
	imul	$COLUMNS, %dx, %di
	add	S_LEFT, %di
	shl	$1, %di
	mov	S_WIDTH, %cx
	mov	S_BLANK, %ax
	rep stosw
	ret
