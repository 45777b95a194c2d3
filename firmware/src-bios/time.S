/* Time: the BIOS tick (IRQ 0, INT 08h) and INT 1Ah, which reads the tick
 * count and the MC146818 real-time clock.
 *
 * The 8254's channel 0 interrupts 1193182 / 65536 = 18.2 times a second;
 * the handler counts those ticks in the BDA (0x46C) and wraps them at
 * midnight (1800B0h ticks), noting that it did at 0x470. */
#include "layout.h"

	.section .text16, "ax"
	.code16

	.globl int08_timer
int08_timer:
	push	%ax
	push	%ds
	mov	$BDA_SEG, %ax
	mov	%ax, %ds
	incl	BDA_TICKS
	cmpl	$TICKS_PER_DAY, BDA_TICKS
	jb	1f
	movl	$0, BDA_TICKS
	movb	$1, BDA_MIDNIGHT
1:	int	$0x1C			/* the user's timer hook */
	mov	$0x20, %al
	out	%al, $0x20
	pop	%ds
	pop	%ax
	iret

/* INT 1Ah. AH=00h: CX:DX = ticks since midnight, AL = midnight passed
 * since the last read. AH=01h: set the ticks from CX:DX. AH=02h: CH, CL,
 * DH = hours, minutes, seconds (BCD), DL = daylight saving. AH=04h: CH,
 * CL, DH, DL = century, year, month, day (BCD). */
	.globl int1a_time
int1a_time:
	push	%bx
	push	%ds
	mov	$BDA_SEG, %bx
	mov	%bx, %ds
	cmp	$0x00, %ah
	je	t_read_ticks
	cmp	$0x01, %ah
	je	t_set_ticks
	cmp	$0x02, %ah
	je	t_read_time
	cmp	$0x04, %ah
	je	t_read_date
	pop	%ds
	pop	%bx
	stc
	jmp	iret_carry

t_read_ticks:
	cli
	mov	BDA_TICKS, %dx
	mov	BDA_TICKS + 2, %cx
	mov	BDA_MIDNIGHT, %al
	movb	$0, BDA_MIDNIGHT
	jmp	t_done

t_set_ticks:
	cli
	mov	%dx, BDA_TICKS
	mov	%cx, BDA_TICKS + 2
	movb	$0, BDA_MIDNIGHT
	jmp	t_done

t_read_time:
	call	rtc_wait_update
	mov	$0x04, %al
	call	rtc_read_bcd
	mov	%al, %ch
	mov	$0x02, %al
	call	rtc_read_bcd
	mov	%al, %cl
	mov	$0x00, %al
	call	rtc_read_bcd
	mov	%al, %dh
	mov	$0x0B, %al
	out	%al, $0x70
	in	$0x71, %al
	and	$0x01, %al
	mov	%al, %dl
	jmp	t_done

t_read_date:
	call	rtc_wait_update
	mov	$0x32, %al
	call	rtc_read_bcd
	mov	%al, %ch
	mov	$0x09, %al
	call	rtc_read_bcd
	mov	%al, %cl
	mov	$0x08, %al
	call	rtc_read_bcd
	mov	%al, %dh
	mov	$0x07, %al
	call	rtc_read_bcd
	mov	%al, %dl

t_done:
	sti
	pop	%ds
	pop	%bx
	clc
	jmp	iret_carry

/* Waits while the RTC is updating (register A bit 7), so the registers
 * read next are consistent for the following 244 us. Clobbers AL, BX. */
rtc_wait_update:
	mov	$0xFFFF, %bx
1:	mov	$0x0A, %al
	out	%al, $0x70
	in	$0x71, %al
	test	$0x80, %al
	jz	2f
	dec	%bx
	jnz	1b
2:	ret

/* AL = RTC register -> AL = its value in BCD, converted if register B
 * bit 2 says the clock keeps binary. Clobbers AH. */
rtc_read_bcd:
	out	%al, $0x70
	in	$0x71, %al
	mov	%al, %ah
	mov	$0x0B, %al
	out	%al, $0x70
	in	$0x71, %al
	test	$0x04, %al
	mov	%ah, %al
	jz	1f
	aam				/* AH = AL / 10, AL = AL % 10 */
	shl	$4, %ah
	or	%ah, %al
1:	ret
