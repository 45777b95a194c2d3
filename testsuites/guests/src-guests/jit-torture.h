/*
 * jit-torture.h: the layout jit-torture.c and jit-torture.S share.
 */
#ifndef JIT_TORTURE_H
#define JIT_TORTURE_H

/* window_pt maps the 4 MiB from here: the long block's data pages, the
 * page-straddling code and the two aliases of one code page. */
#define WINDOW 0x00800000
#define DATA_PAGES 15

/* The long block's 30 instructions (jit-torture.S, blk0-blk29). */
#define BLOCK_INSNS 30

/* The long block's stack straddles two pages: its first push writes
 * 0x80000 (page 0x80), the deeper ones 0x7FFFC and 0x7FFF8 (page 0x7F). */
#define BLOCK_STACK_TOP 0x00080004

/* What debugger_target returns until someone changes its code. */
#define DEBUGGER_TARGET_ORIGINAL 0x0DE60001

/* The long block's data: slot p lies in data page p, 4*p bytes in. The
 * block's three read-modify-write slots are reset between hot runs. */
#define D_INIT_0 0x01020304
#define D_INIT_1 0x11121314
#define D_INIT_2 0xF0E0D0C0
#define D_INIT_3 0x33343536
#define D_INIT_4 0x44454647
#define D_INIT_5 0x55565758
#define D_INIT_6 0x6F7F8F9F
#define D_INIT_7 0x77787980
#define D_INIT_8 0x88898A8B
#define D_INIT_9 0x99A1A2C3
#define D_INIT_10 0xAAABACAD
#define D_INIT_11 0xF1B2B3B4
#define D_INIT_12 0xCCCDCECF
#define D_INIT_13 0x000000C3 /* D_INIT_9's low byte: the block's CMP sets ZF */
#define D_INIT_14 0xEEEFF0F1

/* struct block_context, as the stub at long_block_entry reads it. */
#define CTX_EAX 0
#define CTX_ECX 4
#define CTX_EDX 8
#define CTX_EBX 12
#define CTX_ESP 16
#define CTX_EBP 20
#define CTX_ESI 24
#define CTX_EDI 28
#define CTX_DS 32
#define CTX_SS 36

#ifndef __ASSEMBLER__
/* The registers the long block starts with; general registers in the
 * order of the model's r[] (EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI). */
struct block_context {
	uint32_t r[8];
	uint32_t ds, ss;
};
#endif

#endif /* JIT_TORTURE_H */
