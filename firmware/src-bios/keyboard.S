/* The keyboard: the IRQ 1 handler (INT 09h) that turns scancodes into
 * keys, and INT 16h that hands them to software.
 *
 * The 8042 translates the keyboard's codes to set 1 (POST sets its
 * translation bit), so a byte from port 60h is a make code, or the same
 * code with bit 7 set when the key is released, possibly after an E0h
 * prefix for the keys the 101-key keyboard added. A key becomes a word,
 * scancode in the high byte and ASCII (or 0) in the low byte, in the
 * BDA's 16-word ring buffer (head 41Ah, tail 41Ch, bounds at 480h/482h).
 * Shift, Ctrl, Alt and the lock keys live in the BDA flag bytes 417h
 * (state) and 418h (lock keys held down).
 *
 * Not handled: the Pause key's E1h sequence, Shift/Ctrl/Alt variants of
 * the function keys, Alt+keypad codes, the keyboard LEDs. */
#include "layout.h"

#define KF_RSHIFT 0x01
#define KF_LSHIFT 0x02
#define KF_CTRL   0x04
#define KF_ALT    0x08
#define KF_SCROLL 0x10
#define KF_NUM    0x20
#define KF_CAPS   0x40
#define KF3_E0    0x02

	.section .text16, "ax"
	.code16

	.globl int09_keyboard
int09_keyboard:
	push	%ax
	push	%bx
	push	%si
	push	%ds
	mov	$BDA_SEG, %ax
	mov	%ax, %ds
	in	$0x60, %al
	cmp	$0xE0, %al
	jne	1f
	orb	$KF3_E0, BDA_KBD_FLAGS3
	jmp	kbd_eoi
1:	mov	BDA_KBD_FLAGS3, %ah	/* AH bit 1: this code had an E0 prefix */
	andb	$~KF3_E0, BDA_KBD_FLAGS3
	mov	%al, %bl
	and	$0x7F, %bl
	cmp	$0x2A, %bl
	je	kbd_left_shift
	cmp	$0x36, %bl
	je	kbd_right_shift
	cmp	$0x1D, %bl
	je	kbd_ctrl
	cmp	$0x38, %bl
	je	kbd_alt
	test	$KF3_E0, %ah
	jnz	2f			/* E0 45h/46h are not the lock keys */
	cmp	$0x3A, %bl
	je	kbd_caps
	cmp	$0x45, %bl
	je	kbd_num
	cmp	$0x46, %bl
	je	kbd_scroll
2:	test	$0x80, %al
	jnz	kbd_eoi			/* other keys' releases mean nothing */
	call	kbd_translate
	jc	kbd_eoi
	call	kbd_enqueue
kbd_eoi:
	mov	$0x20, %al
	out	%al, $0x20
	pop	%ds
	pop	%si
	pop	%bx
	pop	%ax
	iret

/* E0 2Ah / E0 36h are the "fake shifts" around the grey keys: ignored. */
kbd_left_shift:
	test	$KF3_E0, %ah
	jnz	kbd_eoi
	mov	$KF_LSHIFT, %bl
	jmp	kbd_modifier
kbd_right_shift:
	test	$KF3_E0, %ah
	jnz	kbd_eoi
	mov	$KF_RSHIFT, %bl
	jmp	kbd_modifier
kbd_ctrl:
	mov	$KF_CTRL, %bl
	jmp	kbd_modifier
kbd_alt:
	mov	$KF_ALT, %bl
/* A held modifier: its bit in 417h is set while the key is down. */
kbd_modifier:
	test	$0x80, %al
	jnz	1f
	or	%bl, BDA_KBD_FLAGS1
	jmp	kbd_eoi
1:	not	%bl
	and	%bl, BDA_KBD_FLAGS1
	jmp	kbd_eoi

kbd_caps:
	mov	$KF_CAPS, %bl
	jmp	kbd_lock
kbd_num:
	mov	$KF_NUM, %bl
	jmp	kbd_lock
kbd_scroll:
	mov	$KF_SCROLL, %bl
/* A lock key toggles its state in 417h when pressed; the same bit in
 * 418h records that it is held, so the keyboard's typematic repeats do
 * not toggle it again. */
kbd_lock:
	test	$0x80, %al
	jnz	1f
	test	%bl, BDA_KBD_FLAGS2
	jnz	kbd_eoi
	or	%bl, BDA_KBD_FLAGS2
	xor	%bl, BDA_KBD_FLAGS1
	jmp	kbd_eoi
1:	not	%bl
	and	%bl, BDA_KBD_FLAGS2
	jmp	kbd_eoi

/* AL = make code, AH bit 1 = E0 prefix -> AX = key word, or CF set for
 * a code that makes no key. DS = BDA. Clobbers BX. */
kbd_translate:
	test	$KF3_E0, %ah
	jnz	kbd_extended
	mov	%al, %ah
	test	%al, %al
	jz	kbd_none
	cmp	$0x39, %al
	jbe	kbd_main
	cmp	$0x3B, %al
	jb	kbd_none
	cmp	$0x44, %al
	jbe	kbd_no_ascii		/* F1-F10 */
	cmp	$0x47, %al
	jb	kbd_none
	cmp	$0x53, %al
	jbe	kbd_keypad
	cmp	$0x57, %al
	je	1f
	cmp	$0x58, %al
	jne	kbd_none
1:	add	$0x85 - 0x57, %ah	/* F11, F12 have scancodes 85h, 86h */
kbd_no_ascii:
	xor	%al, %al
	clc
	ret
kbd_none:
	stc
	ret

/* The main block: the table gives the character; Caps Lock inverts
 * Shift for letters; Ctrl makes control characters of 40h-7Fh; Alt
 * leaves only the scancode. */
kbd_main:
	movzbw	%al, %bx
	testb	$KF_LSHIFT | KF_RSHIFT, BDA_KBD_FLAGS1
	jnz	1f
	mov	%cs:kbd_unshifted(%bx), %al
	jmp	2f
1:	mov	%cs:kbd_shifted(%bx), %al
2:	testb	$KF_CAPS, BDA_KBD_FLAGS1
	jz	3f
	mov	%al, %bl
	or	$0x20, %bl
	cmp	$'a', %bl
	jb	3f
	cmp	$'z', %bl
	ja	3f
	xor	$0x20, %al
3:	testb	$KF_CTRL, BDA_KBD_FLAGS1
	jz	4f
	cmp	$0x0D, %al
	jne	5f
	mov	$0x0A, %al		/* Ctrl+Enter: line feed */
5:	cmp	$0x40, %al
	jb	4f
	and	$0x1F, %al
4:	testb	$KF_ALT, BDA_KBD_FLAGS1
	jz	6f
	xor	%al, %al
6:	clc
	ret

/* The keypad: digits and the point when Num Lock and Shift differ,
 * otherwise the cursor keys (no ASCII); '-' and '+' always. */
kbd_keypad:
	movzbw	%al, %bx
	mov	%cs:kbd_keypad_chars - 0x47(%bx), %al
	cmp	$'-', %al
	je	2f
	cmp	$'+', %al
	je	2f
	mov	BDA_KBD_FLAGS1, %bl
	mov	%bl, %bh
	and	$KF_LSHIFT | KF_RSHIFT, %bh
	jz	1f
	xor	$KF_NUM, %bl
1:	test	$KF_NUM, %bl
	jnz	2f
	xor	%al, %al
2:	clc
	ret

/* E0-prefixed keys: keypad Enter and '/', and the grey cursor block
 * (which shares the keypad's scancodes, without ASCII). */
kbd_extended:
	mov	%al, %ah
	cmp	$0x1C, %al
	jne	1f
	mov	$0x0D, %al
	clc
	ret
1:	cmp	$0x35, %al
	jne	2f
	mov	$'/', %al
	clc
	ret
2:	cmp	$0x47, %al
	jb	kbd_none
	cmp	$0x53, %al
	ja	kbd_none
	jmp	kbd_no_ascii

/* Appends the key AX to the ring buffer; CF set (and the key dropped) if
 * the buffer is full. DS = BDA. Clobbers BX, SI. */
kbd_enqueue:
	mov	BDA_KBD_TAIL, %si
	lea	2(%si), %bx
	cmp	BDA_KBD_END, %bx
	jb	1f
	mov	BDA_KBD_START, %bx
1:	cmp	BDA_KBD_HEAD, %bx
	je	2f
	mov	%ax, (%si)
	mov	%bx, BDA_KBD_TAIL
	clc
	ret
2:	stc
	ret

/* INT 16h. AH=00h/10h: wait for a key, AX = key. AH=01h/11h: ZF clear
 * and AX = the next key if there is one (left in the buffer), ZF set if
 * not. AH=02h/12h: AL = shift flags (12h: AH = lock keys held). AH=05h:
 * store the key CX; AL = 0, or 1 if the buffer is full. */
	.globl int16_keyboard
int16_keyboard:
	push	%bx
	push	%si
	push	%ds
	mov	$BDA_SEG, %bx
	mov	%bx, %ds
	cmp	$0x00, %ah
	je	k_read
	cmp	$0x10, %ah
	je	k_read
	cmp	$0x01, %ah
	je	k_peek
	cmp	$0x11, %ah
	je	k_peek
	cmp	$0x02, %ah
	je	k_shift_flags
	cmp	$0x12, %ah
	je	k_shift_flags
	cmp	$0x05, %ah
	je	k_store
k_done:
	pop	%ds
	pop	%si
	pop	%bx
	iret

/* Waiting is STI; HLT: an interrupt cannot slip in between the check and
 * the HLT, since STI holds interrupts off for one more instruction. */
k_read:
	cli
	mov	BDA_KBD_HEAD, %bx
	cmp	BDA_KBD_TAIL, %bx
	jne	1f
	sti
	hlt
	jmp	k_read
1:	mov	(%bx), %ax
	add	$2, %bx
	cmp	BDA_KBD_END, %bx
	jb	2f
	mov	BDA_KBD_START, %bx
2:	mov	%bx, BDA_KBD_HEAD
	sti
	jmp	k_done

k_peek:
	cli
	mov	BDA_KBD_HEAD, %bx
	cmp	BDA_KBD_TAIL, %bx
	je	1f
	mov	(%bx), %ax
1:	sti
	pop	%ds
	pop	%si
	pop	%bx
	jmp	iret_zero

k_shift_flags:
	cmp	$0x12, %ah
	mov	BDA_KBD_FLAGS1, %al
	jne	k_done
	mov	BDA_KBD_FLAGS2, %ah
	jmp	k_done

k_store:
	cli
	mov	%cx, %ax
	call	kbd_enqueue
	sti
	mov	$0, %al
	adc	$0, %al
	jmp	k_done

	.section .rodata16, "a"
/* Set 1 make codes 00h-39h to characters, without and with Shift. */
kbd_unshifted:
	.byte	0, 0x1B
	.ascii	"1234567890-="
	.byte	0x08, 0x09
	.ascii	"qwertyuiop[]"
	.byte	0x0D, 0
	.ascii	"asdfghjkl;'`"
	.byte	0
	.ascii	"\\zxcvbnm,./"
	.byte	0
	.ascii	"*"
	.byte	0
	.ascii	" "
kbd_shifted:
	.byte	0, 0x1B
	.ascii	"!@#$%^&*()_+"
	.byte	0x08, 0
	.ascii	"QWERTYUIOP{}"
	.byte	0x0D, 0
	.ascii	"ASDFGHJKL:\"~"
	.byte	0
	.ascii	"|ZXCVBNM<>?"
	.byte	0
	.ascii	"*"
	.byte	0
	.ascii	" "
/* Keypad make codes 47h-53h. */
kbd_keypad_chars:
	.ascii	"789-456+1230."
