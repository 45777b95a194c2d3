/* INT 13h, fixed disk services, for the ATA disks POST found on the
 * primary channel (drive 80h, 81h: see ata.c and the EBDA disk table).
 *
 * Every transfer is PIO, one READ SECTORS (20h) or WRITE SECTORS (30h)
 * command per 512-byte sector, addressed by 28-bit LBA (ATA/ATAPI-6,
 * 8.27 and 8.62), polling the status register with interrupts from the
 * drive disabled (nIEN). CHS requests (AH=02h/03h) are translated to LBA
 * with the geometry AH=08h reports; the EDD functions (AH=41h-48h, Phoenix
 * "BIOS Enhanced Disk Drive Specification" 1.1) take the LBA directly.
 *
 * Status codes (AH, and BDA 0x474): 00h success, 01h bad command or
 * parameter, 04h sector not found (beyond the disk), 20h controller
 * failure (no data request), 80h timeout, E0h the drive reported an
 * error (ERR or DF). */
#include "layout.h"
#include "frame.h"

#define ST_OK           0x00
#define ST_BAD_COMMAND  0x01
#define ST_NOT_FOUND    0x04
#define ST_CONTROLLER   0x20
#define ST_TIMEOUT      0x80
#define ST_DRIVE_ERROR  0xE0

	.section .text16, "ax"
	.code16

	.globl int13_disk
int13_disk:
	sti
	cld
	SERVICE_ENTER
	mov	$BDA_SEG, %bx
	mov	%bx, %ds
	mov	BDA_EBDA_SEG, %bx
	mov	%bx, %fs
	mov	F_BX(%bp), %bx
	cmp	$0x01, %ah
	je	d_status
	call	find_disk
	jc	d_bad_command
	cmp	$0x00, %ah
	je	d_ok			/* reset: nothing to do for ATA in PIO */
	cmp	$0x02, %ah
	je	d_read_chs
	cmp	$0x03, %ah
	je	d_write_chs
	cmp	$0x04, %ah
	je	d_ok			/* verify */
	cmp	$0x08, %ah
	je	d_parameters
	cmp	$0x0C, %ah
	je	d_ok			/* seek */
	cmp	$0x0D, %ah
	je	d_ok			/* alternate reset */
	cmp	$0x10, %ah
	je	d_ok			/* test unit ready */
	cmp	$0x11, %ah
	je	d_ok			/* recalibrate */
	cmp	$0x15, %ah
	je	d_disk_type
	cmp	$0x41, %ah
	je	d_edd_check
	cmp	$0x42, %ah
	je	d_edd_read
	cmp	$0x43, %ah
	je	d_edd_write
	cmp	$0x44, %ah
	je	d_ok			/* extended verify */
	cmp	$0x47, %ah
	je	d_ok			/* extended seek */
	cmp	$0x48, %ah
	je	d_edd_parameters
d_bad_command:
	mov	$ST_BAD_COMMAND, %al
	jmp	d_return
d_not_found:
	mov	$ST_NOT_FOUND, %al
	jmp	d_return
d_ok:
	mov	$ST_OK, %al
/* AL = status: to AH, to the BDA, and CF set when it is not 0. */
d_return:
	mov	%al, BDA_DISK_STATUS
	mov	%al, F_AX + 1(%bp)
	test	%al, %al
	jnz	1f
	CLEAR_CF
	SERVICE_RETURN
1:	SET_CF
	SERVICE_RETURN

/* AH=01h: AH = status of the last operation. */
d_status:
	mov	BDA_DISK_STATUS, %al
	jmp	d_return

/* AH=02h read, 03h write: AL = sectors, CH = cylinder bits 7-0, CL bits
 * 7-6 = cylinder bits 9-8 and bits 5-0 = sector (from 1), DH = head,
 * ES:BX = buffer. Returns AL = sectors transferred. */
d_read_chs:
	mov	$ATA_CMD_READ, %al
	jmp	1f
d_write_chs:
	mov	$ATA_CMD_WRITE, %al
1:	push	%ax
	mov	%cl, %al
	and	$0x3F, %al
	jz	2f			/* sectors count from 1 */
	cmp	%fs:DISK_SPT(%si), %al
	ja	2f
	movzbw	%cl, %ax		/* AX = cylinder */
	shl	$2, %ax
	and	$0x300, %ax
	mov	%ch, %al
	cmp	%fs:DISK_CYLS(%si), %ax
	jae	2f
	movzbw	%dh, %bx
	cmp	%fs:DISK_HEADS(%si), %bx
	jae	2f
	/* LBA = (cylinder * heads + head) * sectors per track + sector - 1 */
	movzwl	%ax, %eax
	movzwl	%fs:DISK_HEADS(%si), %edx
	imul	%edx, %eax
	movzwl	%bx, %ebx
	add	%ebx, %eax
	movzwl	%fs:DISK_SPT(%si), %edx
	imul	%edx, %eax
	movzbl	%cl, %ebx
	and	$0x3F, %bl
	dec	%ebx
	add	%eax, %ebx
	pop	%ax
	movzbw	F_AX(%bp), %cx
	test	%cx, %cx
	jz	d_bad_command
	mov	F_BX(%bp), %di
	call	disk_transfer
	mov	%cl, F_AX(%bp)
	mov	%ah, %al
	jmp	d_return
2:	pop	%ax
	movb	$0, F_AX(%bp)
	jmp	d_not_found

/* AH=08h: CH = last cylinder bits 7-0, CL = sectors per track | last
 * cylinder bits 9-8 << 6, DH = last head, DL = number of disks. */
d_parameters:
	mov	%fs:DISK_CYLS(%si), %ax
	dec	%ax
	mov	%al, F_CX + 1(%bp)
	shl	$6, %ah
	mov	%fs:DISK_SPT(%si), %al
	or	%ah, %al
	mov	%al, F_CX(%bp)
	mov	%fs:DISK_HEADS(%si), %al
	dec	%al
	mov	%al, F_DX + 1(%bp)
	mov	BDA_DISK_COUNT, %al
	mov	%al, F_DX(%bp)
	movb	$0, F_AX(%bp)
	jmp	d_ok

/* AH=15h: AH = 03h (a fixed disk), CX:DX = its sectors. */
d_disk_type:
	mov	%fs:DISK_SECTORS(%si), %eax
	mov	%ax, F_DX(%bp)
	shr	$16, %eax
	mov	%ax, F_CX(%bp)
	movb	$ST_OK, BDA_DISK_STATUS
	movb	$0x03, F_AX + 1(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AH=41h BX=55AAh: the extensions are here. BX = AA55h, AH = version
 * (21h = EDD 1.1), CX = 1: the extended disk access functions (42h-44h,
 * 47h, 48h). */
d_edd_check:
	cmp	$0x55AA, %bx
	jne	d_bad_command
	movw	$0xAA55, F_BX(%bp)
	movw	$0x0001, F_CX(%bp)
	movb	$ST_OK, BDA_DISK_STATUS
	movb	$0x21, F_AX + 1(%bp)
	CLEAR_CF
	SERVICE_RETURN

/* AH=42h read, 43h write: DS:SI = disk address packet: byte 0 = its size
 * (10h or more), word 2 = blocks, dword 4 = buffer segment:offset, qword
 * 8 = first LBA. The packet's block count becomes the blocks transferred. */
d_edd_read:
	mov	$ATA_CMD_READ, %al
	jmp	1f
d_edd_write:
	mov	$ATA_CMD_WRITE, %al
1:	mov	F_DS(%bp), %dx
	mov	%dx, %gs
	mov	F_SI(%bp), %di
	cmpb	$0x10, %gs:(%di)
	jb	d_bad_command
	cmpl	$0xFFFFFFFF, %gs:4(%di)
	je	d_bad_command		/* a 64-bit flat buffer: not in real mode */
	cmpl	$0, %gs:12(%di)
	jne	d_not_found
	mov	%gs:8(%di), %ebx
	mov	%gs:2(%di), %cx
	push	%di
	les	%gs:4(%di), %di
	call	disk_transfer
	pop	%di
	mov	%cx, %gs:2(%di)
	mov	%ah, %al
	jmp	d_return

/* AH=48h: DS:SI = result buffer, word 0 = its size (1Ah or more): flags
 * (bit 1: the geometry is valid), cylinders, heads, sectors per track
 * (dwords), total sectors (qword), bytes per sector (word); 1Eh bytes
 * with the device parameter table pointer, which we do not have
 * (FFFF:FFFF). */
d_edd_parameters:
	mov	F_DS(%bp), %dx
	mov	%dx, %gs
	mov	F_SI(%bp), %di
	mov	%gs:(%di), %ax
	cmp	$0x1A, %ax
	jb	d_bad_command
	movw	$0x1A, %gs:(%di)
	cmp	$0x1E, %ax
	jb	1f
	movw	$0x1E, %gs:(%di)
	movl	$0xFFFFFFFF, %gs:26(%di)
1:	movw	$0x0002, %gs:2(%di)
	movzwl	%fs:DISK_CYLS(%si), %eax
	mov	%eax, %gs:4(%di)
	movzwl	%fs:DISK_HEADS(%si), %eax
	mov	%eax, %gs:8(%di)
	movzwl	%fs:DISK_SPT(%si), %eax
	mov	%eax, %gs:12(%di)
	mov	%fs:DISK_SECTORS(%si), %eax
	mov	%eax, %gs:16(%di)
	movl	$0, %gs:20(%di)
	movw	$512, %gs:24(%di)
	jmp	d_ok

/* DL = drive number -> FS:SI = its entry in the EBDA disk table, or CF
 * set if there is no such disk. DS = BDA, FS = EBDA. */
find_disk:
	push	%ax
	movzbw	%dl, %si
	sub	$0x80, %si
	jb	1f
	movzbw	BDA_DISK_COUNT, %ax
	cmp	%ax, %si
	jae	1f
	shl	$4, %si
	add	$EBDA_DISKS, %si
	pop	%ax
	clc
	ret
1:	pop	%ax
	stc
	ret

/* Transfers CX sectors from LBA EBX to or from ES:DI; AL = ATA command,
 * FS:SI = disk entry. Returns AH = status (CF set if not 0) and CX =
 * sectors transferred. Clobbers EAX, EBX, EDX, DI, ES. */
disk_transfer:
	push	%bp
	push	%cx
	movzbw	%al, %bp
	/* DI < 16 from here: each sector then advances ES by 20h and no
	 * string instruction crosses the end of a segment. */
	mov	%di, %ax
	shr	$4, %ax
	mov	%es, %dx
	add	%dx, %ax
	mov	%ax, %es
	and	$0x0F, %di
1:	jcxz	2f
	mov	$ST_NOT_FOUND, %ah
	cmp	%fs:DISK_SECTORS(%si), %ebx
	jae	3f
	mov	%bp, %ax
	call	ata_transfer_sector
	jc	3f
	inc	%ebx
	mov	%es, %ax
	add	$0x20, %ax
	mov	%ax, %es
	dec	%cx
	jmp	1b
2:	xor	%ah, %ah
3:	pop	%dx
	neg	%cx
	add	%dx, %cx		/* sectors transferred */
	pop	%bp
	cmp	$1, %ah
	cmc				/* CF = (AH != 0) */
	ret

/* One sector: AL = ATA command, EBX = LBA, ES:DI = buffer, FS:SI = disk
 * entry. Returns CF clear, or CF set with AH = status. Preserves EBX,
 * CX, SI, DI. Clobbers AX, DX. */
ata_transfer_sector:
	push	%cx
	push	%ax
	call	ata_wait_not_busy
	jc	9f
	mov	%ebx, %eax
	shr	$24, %eax
	and	$0x0F, %al
	or	%fs:DISK_SELECT(%si), %al
	mov	$ATA_DRIVE, %dx
	out	%al, %dx
	call	ata_delay
	call	ata_wait_not_busy
	jc	9f
	mov	$ATA_COUNT, %dx
	mov	$1, %al
	out	%al, %dx
	inc	%dx			/* LBA bits 7-0 */
	mov	%bl, %al
	out	%al, %dx
	inc	%dx			/* LBA bits 15-8 */
	mov	%bh, %al
	out	%al, %dx
	inc	%dx			/* LBA bits 23-16 */
	mov	%ebx, %eax
	shr	$16, %eax
	out	%al, %dx
	pop	%ax
	push	%ax
	mov	$ATA_COMMAND, %dx
	out	%al, %dx
	call	ata_delay
	call	ata_wait_not_busy
	jc	9f
	mov	$ST_DRIVE_ERROR, %ah
	test	$ATA_SR_ERR | ATA_SR_DF, %al
	jnz	8f
	mov	$ST_CONTROLLER, %ah
	test	$ATA_SR_DRQ, %al
	jz	8f
	pop	%ax
	push	%ax
	mov	$256, %cx
	mov	$ATA_DATA, %dx
	cmp	$ATA_CMD_WRITE, %al
	je	1f
	push	%di
	rep insw
	pop	%di
	jmp	2f
1:	push	%si
	push	%ds
	push	%es
	pop	%ds
	mov	%di, %si
	rep outsw
	pop	%ds
	pop	%si
	/* The drive writes the sector out, then drops BSY. */
	call	ata_delay
	call	ata_wait_not_busy
	jc	9f
	mov	$ST_DRIVE_ERROR, %ah
	test	$ATA_SR_ERR | ATA_SR_DF, %al
	jnz	8f
2:	pop	%ax
	pop	%cx
	clc
	ret
8:	stc
9:	pop	%cx			/* the saved AX; AH holds the status */
	pop	%cx
	ret

/* Waits for BSY to clear: AL = status, CF clear; or CF set and AH = 80h
 * after 16M polls (a floating bus reads FFh, BSY set, forever). */
ata_wait_not_busy:
	push	%ecx
	mov	$0x1000000, %ecx
	mov	$ATA_STATUS, %dx
1:	in	%dx, %al
	test	$ATA_SR_BSY, %al
	jz	2f
	dec	%ecx
	jnz	1b
	mov	$ST_TIMEOUT, %ah
	pop	%ecx
	stc
	ret
2:	pop	%ecx
	clc
	ret

/* 400 ns for the status to become valid: four alternate status reads. */
ata_delay:
	push	%ax
	push	%dx
	mov	$ATA_ALT_STATUS, %dx
	in	%dx, %al
	in	%dx, %al
	in	%dx, %al
	in	%dx, %al
	pop	%dx
	pop	%ax
	ret
