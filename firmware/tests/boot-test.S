/* The BIOS self test, seen from a boot sector: everything here goes
 * through the BIOS's interfaces (interrupts, the BDA, the MP tables in
 * memory), as an OS loader would. Each check prints one line on the
 * screen and COM1 (INT 10h teletype); the test ends by writing its
 * status to the debug-exit port 0xF4: 0 when every check passed, the
 * number of the first failed check otherwise.
 *
 * Sector 0 loads sectors 2.. at 0x7E00 with INT 13h AH=02h (a CHS read)
 * and jumps there; sector 1 holds a pattern the test reads back. */

#define PATTERN(i) (((i) * 7 + 3) & 0xFF)
#define BUFFER_SEG 0x1000	/* 1000:0000 = linear 0x10000, above the test */
#define SCRATCH_LBA 100

	.code16

/* ---- sector 0 -------------------------------------------------------- */
	.section .boot, "ax"
	.globl _start
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x7C00, %sp
	ljmp	$0, $1f			/* CS:IP = 0000:7Cxx whatever the BIOS used */
1:	sti
	cld
	mov	%dl, boot_drive
	mov	$msg_stage1, %si
	call	print
	mov	$0x02, %ah
	mov	$__stage2_sectors, %al
	mov	$0x0003, %cx		/* cylinder 0, sector 3 = LBA 2 */
	xor	%dh, %dh
	mov	boot_drive, %dl
	mov	$0x7E00, %bx
	int	$0x13
	jc	1f
	cmp	$__stage2_sectors, %al
	jne	1f
	jmp	stage2
1:	mov	$msg_load_failed, %si
	call	print
	mov	$0x7F, %al
	out	%al, $0xF4
2:	cli
	hlt
	jmp	2b

/* SI = NUL-terminated string, through INT 10h AH=0Eh. */
print:
	push	%ax
	push	%bx
1:	lodsb
	test	%al, %al
	jz	2f
	mov	$0x0E, %ah
	mov	$0x0007, %bx
	int	$0x10
	jmp	1b
2:	pop	%bx
	pop	%ax
	ret

boot_drive:
	.byte	0
msg_stage1:
	.asciz	"boot-test: boot sector running, loading the rest with INT 13h AH=02h\r\n"
msg_load_failed:
	.asciz	"boot-test: loading failed\r\n"

	.org	510
	.byte	0x55, 0xAA

/* ---- sector 1 -------------------------------------------------------- */
	.section .pattern, "a"
	.irp	hi, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.irp	lo, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	.byte	PATTERN(\hi * 16 + \lo)
	.endr
	.endr

/* ---- sectors 2.. ------------------------------------------------------ */
	.text
stage2:
	mov	$msg_stage2, %si
	call	print

	/* 1: INT 10h AH=0Fh reports text mode 3, 80 columns. */
	call	next_test
	mov	$0x0F, %ah
	int	$0x10
	cmp	$0x5003, %ax
	jne	fail
	mov	$msg_video, %si
	call	print

	/* 2: INT 10h AH=03h/02h: the cursor is below the first lines; moving
	 * it and reading it back agree. */
	call	next_test
	mov	$0x03, %ah
	xor	%bh, %bh
	int	$0x10
	cmp	$2, %dh
	jb	fail
	test	%dl, %dl
	jnz	fail
	push	%dx
	mov	$0x02, %ah
	mov	$40, %dl
	int	$0x10
	mov	$0x03, %ah
	int	$0x10
	cmp	$40, %dl
	jne	fail
	pop	%dx
	mov	$0x02, %ah
	int	$0x10
	mov	$msg_cursor, %si
	call	print

	/* 3: INT 12h: 639 KiB below the EBDA; INT 11h: the equipment word. */
	call	next_test
	int	$0x12
	cmp	$639, %ax
	jne	fail
	mov	$msg_memory, %si
	call	print
	int	$0x11
	call	print_hex16
	call	newline

	/* 4: INT 13h AH=41h: the EDD extensions are there. */
	call	next_test
	mov	$0x41, %ah
	mov	$0x55AA, %bx
	mov	boot_drive, %dl
	int	$0x13
	jc	fail
	cmp	$0xAA55, %bx
	jne	fail
	test	$1, %cx
	jz	fail
	mov	$msg_edd, %si
	call	print
	mov	%ah, %al
	call	print_hex8
	call	newline

	/* 5: INT 13h AH=08h: a geometry and at least one disk. */
	call	next_test
	mov	$0x08, %ah
	mov	boot_drive, %dl
	int	$0x13
	jc	fail
	test	%dl, %dl
	jz	fail
	mov	$msg_geometry, %si
	call	print
	mov	%cx, %ax
	call	print_hex16
	mov	$msg_dx, %si
	call	print
	mov	%dx, %ax
	call	print_hex16
	call	newline

	/* 6: INT 13h AH=48h: the size of this disk, 128 sectors of 512 bytes. */
	call	next_test
	movw	$0x1E, edd_params
	mov	$0x48, %ah
	mov	boot_drive, %dl
	mov	$edd_params, %si
	int	$0x13
	jc	fail
	cmpl	$128, edd_params + 16
	jne	fail
	cmpw	$512, edd_params + 24
	jne	fail
	mov	$msg_sectors, %si
	call	print
	mov	edd_params + 16, %eax
	call	print_hex32
	call	newline

	/* 7: INT 13h AH=42h reads sector 1 to 1000:0000; it holds the pattern. */
	call	next_test
	movl	$1, dap_lba
	call	read_to_buffer
	call	check_pattern
	mov	$msg_ext_read, %si
	call	print

	/* 8: INT 13h AH=43h writes a sector, AH=42h reads it back. */
	call	next_test
	push	%es
	mov	$BUFFER_SEG, %ax
	mov	%ax, %es
	xor	%di, %di
	mov	$512, %cx
1:	mov	%di, %ax
	xor	$0x5A, %al
	stosb
	loop	1b
	pop	%es
	movl	$SCRATCH_LBA, dap_lba
	movw	$BUFFER_SEG, dap_segment
	mov	$0x4300, %ax
	mov	boot_drive, %dl
	mov	$dap, %si
	int	$0x13
	jc	fail
	push	%es
	mov	$BUFFER_SEG, %ax
	mov	%ax, %es
	xor	%di, %di
	xor	%al, %al
	mov	$512, %cx
	rep stosb			/* forget what was written */
	pop	%es
	call	read_to_buffer
	push	%ds
	mov	$BUFFER_SEG, %ax
	mov	%ax, %ds
	xor	%si, %si
	mov	$512, %cx
1:	mov	%si, %ax
	xor	$0x5A, %al
	cmp	(%si), %al
	jne	2f
	inc	%si
	loop	1b
2:	pop	%ds
	test	%cx, %cx		/* CX > 0: stopped at a difference */
	jnz	fail
	mov	$msg_ext_write, %si
	call	print

	/* 9: INT 13h AH=02h reads sector 1 by CHS (sector 2) as well. */
	call	next_test
	push	%es
	mov	$BUFFER_SEG, %ax
	mov	%ax, %es
	xor	%bx, %bx
	mov	$0x0201, %ax
	mov	$0x0002, %cx
	xor	%dh, %dh
	mov	boot_drive, %dl
	int	$0x13
	pop	%es
	jc	fail
	cmp	$1, %al
	jne	fail
	call	check_pattern
	mov	$msg_chs_read, %si
	call	print

	/* 10: INT 15h E820h: the memory map, with usable RAM at 0 and at
	 * 1 MiB, ending with EBX = 0. */
	call	next_test
	mov	$msg_e820, %si
	call	print
	xor	%ebx, %ebx
	xor	%bp, %bp		/* BP bit 0: RAM at 0, bit 1: RAM at 1 MiB */
1:	mov	$0xE820, %eax
	mov	$0x534D4150, %edx
	mov	$24, %ecx
	mov	$e820_entry, %di
	int	$0x15
	jc	fail
	cmp	$0x534D4150, %eax
	jne	fail
	cmp	$20, %ecx
	jne	fail
	call	print_e820_entry
	cmpl	$1, e820_entry + 16
	jne	2f
	cmpl	$0, e820_entry
	jne	3f
	or	$1, %bp
3:	cmpl	$0x100000, e820_entry
	jne	2f
	or	$2, %bp
2:	test	%ebx, %ebx
	jnz	1b
	cmp	$3, %bp
	jne	fail

	/* 11: INT 15h E801h and AH=88h agree with the map's extended memory. */
	call	next_test
	mov	$0xE801, %ax
	int	$0x15
	jc	fail
	mov	$msg_e801, %si
	call	print
	call	print_hex16
	mov	$msg_comma, %si
	call	print
	mov	%bx, %ax
	call	print_hex16
	mov	$0x88, %ah
	int	$0x15
	jc	fail
	mov	$msg_88, %si
	call	print
	call	print_hex16
	call	newline

	/* 12: INT 15h AX=2402h: A20 is on after POST; 2400h turns it off and
	 * 2401h on again, as 2402h and the wrap-around itself show. */
	call	next_test
	mov	$0x2402, %ax
	int	$0x15
	jc	fail
	cmp	$1, %al
	jne	fail
	mov	$0x2400, %ax
	int	$0x15
	jc	fail
	mov	$0x2402, %ax
	int	$0x15
	cmp	$0, %al
	jne	fail
	mov	$0x2401, %ax
	int	$0x15
	jc	fail
	mov	$0x2402, %ax
	int	$0x15
	cmp	$1, %al
	jne	fail
	mov	$msg_a20, %si
	call	print

	/* 13: INT 1Ah AH=00h twice, a few timer interrupts apart: the tick
	 * count moves on. */
	call	next_test
	mov	$0x00, %ah
	int	$0x1A
	mov	%cx, %bx
	shl	$16, %ebx
	mov	%dx, %bx
	mov	$4, %cx
1:	sti
	hlt
	loop	1b
	mov	$0x00, %ah
	int	$0x1A
	shl	$16, %ecx
	mov	%dx, %cx
	mov	$msg_ticks, %si
	call	print
	mov	%ebx, %eax
	call	print_hex32
	mov	$msg_then, %si
	call	print
	mov	%ecx, %eax
	call	print_hex32
	call	newline
	cmp	%ebx, %ecx
	jbe	fail

	/* 14: INT 1Ah AH=02h/04h: the RTC's time and date, in BCD. */
	call	next_test
	mov	$0x02, %ah
	int	$0x1A
	jc	fail
	mov	$msg_time, %si
	call	print
	mov	%ch, %al
	call	print_hex8
	mov	$':', %al
	call	putc
	mov	%cl, %al
	call	print_hex8
	mov	$':', %al
	call	putc
	mov	%dh, %al
	call	print_hex8
	mov	$0x04, %ah
	int	$0x1A
	jc	fail
	mov	$msg_date, %si
	call	print
	mov	%cx, %ax
	call	print_hex16
	mov	$'-', %al
	call	putc
	mov	%dh, %al
	call	print_hex8
	mov	$'-', %al
	call	putc
	mov	%dl, %al
	call	print_hex8
	call	newline

	/* 15: the MP floating pointer, found the way MP 1.4 section 4 says:
	 * the EBDA's first KiB, else the last KiB of base memory, then the
	 * BIOS ROM 0xF0000-0xFFFFF; valid signature and checksums. Skipped
	 * on a CPU without a local APIC (CPUID leaf 1, EDX bit 9). */
	call	next_test
	mov	$1, %eax
	cpuid
	test	$1 << 9, %edx
	jnz	1f
	mov	$msg_mp_skipped, %si
	call	print
	jmp	2f
1:	call	find_mp_floating_pointer
	jc	fail
	mov	$msg_mp_found, %si
	call	print
	mov	%es, %ax
	call	print_hex16
	mov	$':', %al
	call	putc
	mov	%di, %ax
	call	print_hex16
	mov	$msg_mp_table, %si
	call	print
	mov	%es:4(%di), %eax
	call	print_hex32
	call	check_mp_config_table
	jc	fail
	mov	$msg_mp_entries, %si
	call	print
	mov	%cx, %ax
	call	print_hex16
	call	newline
2:

	/* 16: INT 16h AH=01h: no key waiting (ZF set). */
	call	next_test
	mov	$0x01, %ah
	int	$0x16
	jnz	fail
	mov	$msg_keyboard, %si
	call	print

	/* 17: INT 15h AH=C0h: the configuration table says AT (model FCh). */
	call	next_test
	push	%es
	mov	$0xC0, %ah
	int	$0x15
	jc	1f
	cmpb	$0xFC, %es:2(%bx)
1:	pop	%es
	jc	fail
	jne	fail
	mov	$msg_config, %si
	call	print

	/* 18: INT 16h AH=00h: keys typed on the keyboard arrive through
	 * IRQ 1 translated to scancode and ASCII. The QEMU test types
	 * h, i, Shift+1, Enter when it sees the prompt; with no key within
	 * two seconds (37 ticks) the check is skipped. */
	call	next_test
	mov	$msg_keys_wait, %si
	call	print
	mov	$0x00, %ah
	int	$0x1A
	mov	%dx, %bx
1:	mov	$0x01, %ah
	int	$0x16
	jnz	2f
	sti
	hlt
	mov	$0x00, %ah
	int	$0x1A
	mov	%dx, %ax
	sub	%bx, %ax
	cmp	$37, %ax
	jb	1b
	mov	$msg_keys_skipped, %si
	call	print
	jmp	3f
2:	mov	$msg_keys, %si
	call	print
	mov	$expected_keys, %si
	mov	$4, %cx
4:	xor	%ah, %ah
	int	$0x16
	call	print_hex16
	push	%ax
	mov	$' ', %al
	call	putc
	pop	%ax
	cmp	(%si), %ax
	jne	fail
	add	$2, %si
	loop	4b
	mov	$msg_ok, %si
	call	print
3:

	mov	$msg_passed, %si
	call	print
	xor	%al, %al
	out	%al, $0xF4
	jmp	halt

/* Prints the next test's number; fail reports it. */
next_test:
	incb	test_number
	ret

fail:
	mov	$msg_fail, %si
	call	print
	mov	test_number, %al
	call	print_hex8
	call	newline
	mov	test_number, %al
	out	%al, $0xF4
halt:
	cli
	hlt
	jmp	halt

/* INT 13h AH=42h: one sector from dap_lba to BUFFER_SEG:0000. */
read_to_buffer:
	movw	$BUFFER_SEG, dap_segment
	movw	$1, dap_count
	mov	$0x42, %ah
	mov	boot_drive, %dl
	mov	$dap, %si
	int	$0x13
	jc	fail
	cmpw	$1, dap_count
	jne	fail
	ret

/* Fails unless BUFFER_SEG:0000 holds sector 1's pattern. */
check_pattern:
	push	%ds
	mov	$BUFFER_SEG, %ax
	mov	%ax, %ds
	xor	%si, %si
	mov	$512, %cx
1:	mov	%si, %ax
	imul	$7, %ax
	add	$3, %al
	cmp	(%si), %al
	jne	2f
	inc	%si
	loop	1b
2:	pop	%ds
	test	%cx, %cx
	jnz	fail
	ret

/* Scans 16-byte boundaries from ES:0000 for CX paragraphs for "_MP_"
 * with a valid checksum; CF clear and ES:DI = the structure if found. */
scan_mp:
	xor	%di, %di
1:	cmpl	$0x5F504D5F, %es:(%di)	/* "_MP_" */
	jne	2f
	movzbw	%es:8(%di), %si		/* length in paragraphs */
	shl	$4, %si
	call	checksum
	jz	3f
2:	add	$16, %di
	loop	1b
	stc
	ret
3:	clc
	ret

/* ZF set if SI bytes from ES:DI sum to 0. Preserves CX, DI. */
checksum:
	push	%cx
	push	%di
	mov	%si, %cx
	xor	%al, %al
1:	add	%es:(%di), %al
	inc	%di
	loop	1b
	test	%al, %al
	pop	%di
	pop	%cx
	ret

find_mp_floating_pointer:
	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	mov	0x40E, %ax		/* the EBDA's segment */
	pop	%ds
	test	%ax, %ax
	jz	1f
	mov	%ax, %es
	mov	$64, %cx		/* its first KiB */
	call	scan_mp
	jnc	2f
1:	int	$0x12			/* the last KiB of base memory */
	dec	%ax
	shl	$6, %ax
	mov	%ax, %es
	mov	$64, %cx
	call	scan_mp
	jnc	2f
	mov	$0xF000, %ax		/* the BIOS ROM */
	mov	%ax, %es
	mov	$4096, %cx
	call	scan_mp
2:	ret

/* ES:DI = MP floating pointer: checks its configuration table ("PCMP",
 * checksum, one processor that is the BSP, an IOAPIC at 0xFEC00000);
 * CX = the entry count. CF set if anything is wrong. Leaves ES:DI. */
check_mp_config_table:
	push	%es
	push	%di
	mov	%es:4(%di), %eax	/* physical address, below 1 MiB */
	mov	%ax, %di
	and	$0x0F, %di
	shr	$4, %eax
	mov	%ax, %es
	cmpl	$0x504D4350, %es:(%di)	/* "PCMP" */
	jne	9f
	mov	%es:4(%di), %si		/* base table length */
	call	checksum
	jnz	9f
	cmpl	$0xFEE00000, %es:36(%di)
	jne	9f
	mov	%es:34(%di), %cx	/* entry count */
	add	$44, %di
	cmpb	$0, %es:(%di)		/* a processor entry first ... */
	jne	9f
	testb	$0x02, %es:3(%di)	/* ... the bootstrap processor */
	jz	9f
	cmpl	$0xFEC00000, %es:20+8+4(%di) /* after the bus: the IOAPIC */
	jne	9f
	pop	%di
	pop	%es
	clc
	ret
9:	pop	%di
	pop	%es
	stc
	ret

/* One E820 entry as "base length type". */
print_e820_entry:
	push	%si
	mov	$msg_indent, %si
	call	print
	mov	e820_entry + 4, %eax
	call	print_hex32
	mov	e820_entry, %eax
	call	print_hex32
	mov	$' ', %al
	call	putc
	mov	e820_entry + 12, %eax
	call	print_hex32
	mov	e820_entry + 8, %eax
	call	print_hex32
	mov	$' ', %al
	call	putc
	mov	e820_entry + 16, %al
	call	print_hex8
	call	newline
	pop	%si
	ret

putc:
	push	%ax
	push	%bx
	mov	$0x0E, %ah
	mov	$0x0007, %bx
	int	$0x10
	pop	%bx
	pop	%ax
	ret

newline:
	push	%si
	mov	$msg_newline, %si
	call	print
	pop	%si
	ret

print_hex32:
	push	%eax
	shr	$16, %eax
	call	print_hex16
	pop	%eax
print_hex16:
	push	%ax
	mov	%ah, %al
	call	print_hex8
	pop	%ax
print_hex8:
	push	%ax
	shr	$4, %al
	call	print_nibble
	pop	%ax
	push	%ax
	call	print_nibble
	pop	%ax
	ret

print_nibble:
	and	$0x0F, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	putc
	add	$'a' - '0' - 10, %al
	jmp	putc

	.data
test_number:
	.byte	0
	.balign	4
/* The INT 13h AH=42h/43h disk address packet. */
dap:
	.byte	0x10, 0
dap_count:
	.word	1
	.word	0			/* buffer offset */
dap_segment:
	.word	BUFFER_SEG
dap_lba:
	.long	0, 0
edd_params:
	.space	0x1E
e820_entry:
	.space	24

	.section .rodata
/* h, i, Shift+1, Enter: scancode << 8 | ASCII. */
expected_keys:
	.word	0x2368, 0x1769, 0x0221, 0x1C0D
msg_stage2:	.asciz	"boot-test: running from sectors 2 on\r\n"
msg_video:	.asciz	"  1 INT 10h AH=0Fh: mode 3, 80 columns ... ok\r\n"
msg_cursor:	.asciz	"  2 INT 10h AH=02h/03h: cursor set and read back ... ok\r\n"
msg_memory:	.asciz	"  3 INT 12h: 639 KiB ... ok; INT 11h equipment "
msg_edd:	.asciz	"  4 INT 13h AH=41h: extensions present, version "
msg_geometry:	.asciz	"  5 INT 13h AH=08h: CX "
msg_dx:		.asciz	" DX "
msg_sectors:	.asciz	"  6 INT 13h AH=48h: 512-byte sectors: "
msg_ext_read:	.asciz	"  7 INT 13h AH=42h: sector 1 read to 1000:0000, pattern ... ok\r\n"
msg_ext_write:	.asciz	"  8 INT 13h AH=43h: sector 100 written and read back ... ok\r\n"
msg_chs_read:	.asciz	"  9 INT 13h AH=02h: sector 1 by CHS 0/0/2, pattern ... ok\r\n"
msg_e820:	.asciz	" 10 INT 15h E820h: base, length, type\r\n"
msg_e801:	.asciz	" 11 INT 15h E801h: KiB 1M-16M "
msg_comma:	.asciz	", 64K blocks above 16M "
msg_88:		.asciz	"; AH=88h: KiB above 1M "
msg_a20:	.asciz	" 12 INT 15h AX=2400h-2402h: A20 on, off, on ... ok\r\n"
msg_ticks:	.asciz	" 13 INT 1Ah AH=00h: ticks "
msg_then:	.asciz	" then "
msg_time:	.asciz	" 14 INT 1Ah AH=02h/04h: "
msg_date:	.asciz	" on "
msg_mp_found:	.asciz	" 15 MP floating pointer at "
msg_mp_table:	.asciz	", configuration table at "
msg_mp_entries:	.asciz	", checksums ok, entries "
msg_keyboard:	.asciz	" 16 INT 16h AH=01h: no key waiting ... ok\r\n"
msg_config:	.asciz	" 17 INT 15h AH=C0h: model FCh ... ok\r\n"
msg_mp_skipped:	.asciz	" 15 MP tables ... skipped: CPUID reports no local APIC\r\n"
msg_keys_wait:	.asciz	" 18 INT 16h AH=00h: waiting for keys\r\n"
msg_keys_skipped: .asciz " 18 INT 16h AH=00h ... skipped: no key typed\r\n"
msg_keys:	.asciz	" 18 INT 16h AH=00h: keys "
msg_ok:		.asciz	"... ok\r\n"
msg_passed:	.asciz	"boot-test: all checks passed\r\n"
msg_fail:	.asciz	"boot-test: FAILED check "
msg_indent:	.asciz	"    "
msg_newline:	.asciz	"\r\n"
