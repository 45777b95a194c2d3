/* INT 15h, system services: the memory map (E820h, E801h, 88h), the A20
 * gate (2400h-2403h), the system configuration table (C0h), a wait
 * (86h), and the hooks the BIOS offers but does not use itself. Any
 * other function returns CF set, AH = 86h (not supported). */
#include "layout.h"
#include "frame.h"

#define SMAP 0x534D4150		/* "SMAP" */

	.section .text16, "ax"
	.code16

	.globl int15_system
int15_system:
	cld
	SERVICE_ENTER
	mov	$BDA_SEG, %bx
	mov	%bx, %ds
	mov	BDA_EBDA_SEG, %bx
	mov	%bx, %fs
	mov	F_BX(%bp), %bx
	cmp	$0xE820, %ax
	je	s_e820
	cmp	$0xE801, %ax
	je	s_e801
	cmp	$0x88, %ah
	je	s_extended_memory
	cmp	$0x24, %ah
	je	s_a20
	cmp	$0xC0, %ah
	je	s_configuration
	cmp	$0x86, %ah
	je	s_wait
	cmp	$0x4F, %ah
	je	s_keyboard_intercept
	cmp	$0x90, %ah
	je	s_ok			/* device busy: nothing else to run */
	cmp	$0x91, %ah
	je	s_ok			/* interrupt complete */
s_unsupported:
	movb	$0x86, F_AX + 1(%bp)
	SET_CF
	SERVICE_RETURN
s_ok:
	movb	$0, F_AX + 1(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AX=E820h, EDX = "SMAP", EBX = 0 or the continuation from the last
 * call, ES:DI = buffer, ECX = its size (20 or more): copies one 20-byte
 * range (base, length, type) and returns EAX = "SMAP", ECX = 20 and EBX
 * = the next continuation, 0 after the last range (ACPI 3.0, 14.1). */
s_e820:
	cmp	$SMAP, %edx
	jne	s_unsupported
	cmp	$20, %ecx
	jb	s_unsupported
	movzwl	%fs:EBDA_E820_COUNT, %eax
	cmp	%eax, %ebx
	jae	s_unsupported
	imul	$E820_ENTRY, %bx, %si
	add	$EBDA_E820_MAP, %si
	mov	$E820_ENTRY, %cx
	push	%fs
	pop	%ds
	rep movsb
	inc	%ebx
	cmp	%eax, %ebx
	jb	1f
	xor	%ebx, %ebx
1:	mov	%ebx, F_BX(%bp)
	movl	$SMAP, F_AX(%bp)
	movl	$E820_ENTRY, F_CX(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AX=E801h: AX = CX = KiB between 1 MiB and 16 MiB, BX = DX = 64 KiB
 * blocks above 16 MiB. */
s_e801:
	mov	%fs:EBDA_E801_LOW, %ax
	mov	%ax, F_AX(%bp)
	mov	%ax, F_CX(%bp)
	mov	%fs:EBDA_E801_HIGH, %ax
	mov	%ax, F_BX(%bp)
	mov	%ax, F_DX(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AH=88h: AX = KiB above 1 MiB, as CMOS 30h/31h holds it (at most FFFFh). */
s_extended_memory:
	mov	%fs:EBDA_EXT_KIB, %ax
	mov	%ax, F_AX(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AH=24h: AL=00h disable A20, 01h enable, 02h AL = state, 03h BX = the
 * ways we have (bit 0 the 8042, bit 1 port 92h). Enabling goes through
 * port 92h ("fast A20"); disabling clears both the 8042's output port
 * bit and port 92h's, as either may hold the gate open. */
s_a20:
	cmp	$0x00, %al
	je	1f
	cmp	$0x01, %al
	je	2f
	cmp	$0x02, %al
	je	3f
	cmp	$0x03, %al
	jne	s_unsupported
	movw	$0x0003, F_BX(%bp)
	jmp	s_ok
1:	mov	$0xDD, %al		/* 8042 output port: reset high, A20 low */
	call	kbc_write_output
	in	$0x92, %al
	and	$0xFC, %al		/* bit 1 A20, and never bit 0 (reset) */
	out	%al, $0x92
	jmp	s_ok
2:	in	$0x92, %al
	and	$0xFE, %al
	or	$0x02, %al
	out	%al, $0x92
	jmp	s_ok
3:	call	a20_enabled
	mov	%al, F_AX(%bp)
	jmp	s_ok

/* Writes AL to the 8042's output port (command D1h). Clobbers AH, CX. */
kbc_write_output:
	mov	%al, %ah
	call	kbc_wait_input_empty
	mov	$0xD1, %al
	out	%al, $0x64
	call	kbc_wait_input_empty
	mov	%ah, %al
	out	%al, $0x60
	jmp	kbc_wait_input_empty

kbc_wait_input_empty:
	push	%ax
	mov	$0xFFFF, %cx
1:	in	$0x64, %al
	test	$0x02, %al
	jz	2f
	loop	1b
2:	pop	%ax
	ret

/* AL = 1 if addresses above 1 MiB are distinct from those below (A20
 * on), 0 if they wrap: writes the inverse of 0000:0500 and looks at
 * FFFF:0510, the same byte when A20 is off. Interrupts are off here. */
a20_enabled:
	push	%ds
	push	%es
	xor	%ax, %ax
	mov	%ax, %ds
	dec	%ax
	mov	%ax, %es
	mov	0x0500, %ah
	mov	%ah, %al
	not	%al
	mov	%al, 0x0500
	cmp	%es:0x0510, %al
	mov	%ah, 0x0500
	mov	$0, %al
	je	1f
	mov	$1, %al
1:	pop	%es
	pop	%ds
	ret

/* AH=C0h: ES:BX = the system configuration table. */
s_configuration:
	movw	$BIOS_SEG, F_ES(%bp)
	movw	$system_configuration, F_BX(%bp)
	jmp	s_ok

/* AH=86h: wait CX:DX microseconds, in whole timer ticks (54925 us),
 * halting between them. Needs IRQ 0 unmasked. */
s_wait:
	movzwl	%cx, %eax
	shl	$16, %eax
	mov	%dx, %ax
	xor	%edx, %edx
	mov	$54925, %ecx
	div	%ecx
	lea	1(%eax), %ecx
	mov	BDA_TICKS, %edx
	sti
1:	hlt
	cmp	BDA_TICKS, %edx
	je	1b
	mov	BDA_TICKS, %edx
	dec	%ecx
	jnz	1b
	cli
	jmp	s_ok

/* AH=4Fh: the keyboard intercept. CF set: let INT 09h process AL. */
s_keyboard_intercept:
	SET_CF
	SERVICE_RETURN

	.section .rodata16, "a"
/* IBM's system configuration table: length, model FCh (AT), submodel,
 * BIOS revision, feature byte 1 = second 8259 (bit 6) and RTC (bit 5). */
system_configuration:
	.word	8
	.byte	0xFC, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00
