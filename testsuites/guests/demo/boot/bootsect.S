/*
 * bootsect.S: the boot sector of the demo disk image.
 *
 * The BIOS reads sector 0 of the boot disk to 0x7C00 and jumps to it in
 * real mode, with DL = the drive number. These 512 bytes must load the
 * kernel and start it as a Multiboot loader would (Multiboot 0.6.96,
 * 3.2), so that the kernel has a single entry for both ways in:
 *
 *   1. ask the BIOS for the memory sizes (INT 12h, INT 15h AX=E820h)
 *      and write a Multiboot information structure at INFO;
 *   2. read the kernel, the sectors that follow this one, to 0x10000
 *      with INT 13h extended reads (AH=42h, by LBA), or, if the BIOS has
 *      no extensions, one sector at a time by cylinder/head/sector
 *      (AH=02h);
 *   3. enable A20, switch to protected mode with flat segments, copy
 *      the kernel to 1 MiB, and jump to its entry with EAX = 0x2BADB002
 *      and EBX = INFO.
 *
 * The kernel image is the bytes of the kernel ELF's loadable segments
 * laid out from 1 MiB (build.rs makes it). build.rs also writes its size
 * in sectors and its entry address into the two fields at offsets 4 and
 * 6 below. Real mode can only address the first MiB (plus A20), hence
 * the staging copy at 0x10000: it allows a kernel of up to 512 KiB.
 */

#define INFO 0x0500            /* Multiboot information, 72 bytes */
#define MMAP 0x0600            /* memory map entries, 24 bytes each */
#define STAGING_SEGMENT 0x1000 /* the kernel is read to 0x10000 */
#define KERNEL_ADDRESS 0x100000
#define SECTORS_PER_READ 32    /* 16 KiB per INT 13h AH=42h */
#define SMAP 0x534D4150        /* "SMAP", the E820 signature */
#define MB_INFO_MEMORY 0x001
#define MB_INFO_MMAP 0x040
#define MB_INFO_LOADER_NAME 0x200

	.code16
	.text
	.globl _start
_start:
	jmp real_start

	.org 4
kernel_sectors:
	.word 0xFFFF            /* patched by build.rs */
kernel_entry:
	.long 0xFFFFFFFF        /* patched by build.rs */

real_start:
	/* Segments 0, and the stack below us. A MOV to SS holds interrupts
	 * off until after the next instruction (SDM Vol. 3A 6.8.3), so no
	 * interrupt sees SS changed but not SP. (The BIOS may have entered
	 * at 07C0:0000 rather than 0000:7C00; that does not matter, as all
	 * our jumps are relative and our data is addressed through DS.) */
	xorw %ax, %ax
	movw %ax, %ss
	movw $0x7C00, %sp
	movw %ax, %ds
	movw %ax, %es
	cld
	movb %dl, drive

	/* ---- 1. the Multiboot information ---- */
	movw $INFO, %di
	movw $72, %cx
	rep stosb               /* AL = 0 */
	/* (16-bit stores suffice: the high halves are zero already.) */
	movw $(MB_INFO_MEMORY | MB_INFO_MMAP | MB_INFO_LOADER_NAME), INFO
	movw $MMAP, INFO + 48
	movw $loader_name, INFO + 64
	int $0x12               /* AX = KiB of conventional memory */
	movw %ax, INFO + 4      /* mem_lower */

	/* E820 returns one map entry per call, EBX = 0 after the last
	 * (ACPI 6.4, 15.1). A Multiboot entry is a 4-byte size followed by
	 * the 20 bytes E820 returns, so we let the BIOS write at entry + 4.
	 * The entry at 1 MiB gives mem_upper. The map may grow up to our
	 * stack, room for a thousand entries. */
	movw $MMAP + 4, %di
	xorl %ebx, %ebx
e820_next:
	movl $0xE820, %eax
	movl $20, %ecx
	movl $SMAP, %edx
	int $0x15
	jc e820_done
	cmpl $SMAP, %eax
	jne e820_done
	movl $20, -4(%di)
	cmpl $KERNEL_ADDRESS, (%di)     /* base, low half */
	jne 2f
	cmpl $1, 16(%di)                /* type 1: usable RAM */
	jne 2f
	movl 8(%di), %eax               /* length, low half */
	shrl $10, %eax
	movl %eax, INFO + 8             /* mem_upper, in KiB */
2:	addw $24, %di
	testl %ebx, %ebx
	jnz e820_next
e820_done:
	leaw -(MMAP + 4)(%di), %ax
	movw %ax, INFO + 44             /* mmap_length */

	/* ---- 2. the kernel, from sector 1 on ---- */
	movw kernel_sectors, %ax
	movw %ax, remaining
	/* Are the extensions there? (INT 13h AH=41h: CF clear, BX = AA55h,
	 * CX bit 0 = the packet calls AH=42h-44h are supported.) */
	movb $0x41, %ah
	movw $0x55AA, %bx
	movb drive, %dl
	int $0x13
	jc read_chs
	cmpw $0xAA55, %bx
	jne read_chs
	testb $1, %cl
	jz read_chs
read_lba:
	movw remaining, %ax
	testw %ax, %ax
	jz loaded
	cmpw $SECTORS_PER_READ, %ax
	jbe 3f
	movw $SECTORS_PER_READ, %ax
3:	movw %ax, dap_count
	movw $dap, %si
	movb $0x42, %ah
	movb drive, %dl
	int $0x13
	jc read_chs             /* then go on without the extensions */
	movw dap_count, %ax
	call advance
	jmp read_lba

read_chs:
	movl $0x29534843, mode  /* "CHS)" in the loader name */
	/* INT 13h AH=08h: CL bits 0-5 = sectors per track, DH = last head.
	 * ES:DI = 0:0 works around BIOSes that look at it. */
	movb $0x08, %ah
	movb drive, %dl
	xorw %di, %di
	int $0x13
	jc disk_error
	andw $0x3F, %cx
	movw %cx, sectors_per_track
	movb %dh, %dl
	xorb %dh, %dh
	incw %dx
	movw %dx, heads
chs_next:
	movw remaining, %ax
	testw %ax, %ax
	jz loaded
	/* LBA = (cylinder * heads + head) * sectors_per_track + sector - 1 */
	movw dap_lba, %ax
	xorw %dx, %dx
	divw sectors_per_track
	movw %dx, %cx
	incw %cx                /* CL = sector, from 1 */
	xorw %dx, %dx
	divw heads              /* AX = cylinder, DX = head */
	movb %al, %ch           /* CH = cylinder bits 0-7 */
	shlb $6, %ah
	orb %ah, %cl            /* CL bits 6-7 = cylinder bits 8-9 */
	movb %dl, %dh
	movb drive, %dl
	movw dap_segment, %es
	xorw %bx, %bx
	movw $0x0201, %ax       /* read 1 sector to ES:BX */
	int $0x13
	jc disk_error
	movw $1, %ax
	call advance
	jmp chs_next

/* AX sectors were read: move the disk address and the buffer on. */
advance:
	addw %ax, dap_lba
	subw %ax, remaining
	shlw $5, %ax            /* 512 bytes = 32 paragraphs */
	addw %ax, dap_segment
	ret

disk_error:
	movw $error_message, %si
4:	lodsb
	testb %al, %al
	jz 6f
	movw $0x3F8, %dx
	outb %al, %dx
	jmp 4b
6:	cli
	hlt
	jmp 6b

	/* ---- 3. protected mode ---- */
loaded:
	cli
	/* "Fast A20": bit 1 of port 0x92 enables A20; bit 0 would reset
	 * the machine, so it must be written as 0. */
	inb $0x92, %al
	orb $2, %al
	andb $0xFE, %al
	outb %al, $0x92
	lgdt gdt_descriptor
	movl %cr0, %eax
	orb $1, %al             /* CR0.PE */
	movl %eax, %cr0
	/* Until CS is reloaded the CPU still executes 16-bit code (SDM
	 * Vol. 3A 9.9.1: a far jump right after setting PE). */
	ljmp $0x08, $protected

	.code32
protected:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movw %ax, %ss
	movl $STAGING_SEGMENT * 16, %esi
	movl $KERNEL_ADDRESS, %edi
	movzwl kernel_sectors, %ecx
	shll $7, %ecx           /* 128 doublewords per sector */
	rep movsl
	movl $0x2BADB002, %eax
	movl $INFO, %ebx
	jmp *kernel_entry

	/* ---- data ---- */
drive:
	.byte 0
remaining:
	.word 0
sectors_per_track:
	.word 0
heads:
	.word 0
/* The disk address packet of INT 13h AH=42h (EDD 3.0): size, reserved,
 * sector count, buffer offset and segment, 64-bit LBA. It also holds
 * the CHS loop's position. */
dap:
	.byte 16, 0
dap_count:
	.word 0
	.word 0
dap_segment:
	.word STAGING_SEGMENT
dap_lba:
	.long 1, 0

/* Null, flat code (0x08) and flat data (0x10) descriptors. */
gdt:
	.quad 0
	.quad 0x00CF9A000000FFFF
	.quad 0x00CF92000000FFFF
gdt_descriptor:
	.word 3 * 8 - 1
	.long gdt

loader_name:
	.ascii "boot sector ("
mode:
	.asciz "LBA)"
error_message:
	.asciz "disk error\r\n"

	.org 510
	.word 0xAA55            /* the BIOS boots a sector that ends so */
