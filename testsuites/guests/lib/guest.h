/*
 * guest.h: everything a ringside guest can call.
 *
 * Guests are freestanding: no libc, no host headers (we build with
 * -nostdinc), so the few types and the x86 instructions C cannot express
 * are declared here. Read this file top to bottom once; it is the whole
 * runtime's interface:
 *
 *   - the flat GDT every guest starts with, and helpers to add descriptors;
 *   - the IDT, whose 256 stubs record each exception into last_trap;
 *   - TRY(...), which runs a statement and returns the exception it raised;
 *   - run_user(), which runs a function at CPL 3;
 *   - the test protocol (test, expect_eq, expect_trap, skip, tests_done);
 *   - COM1 output (kprintf) and the debug-exit port.
 *
 * Assembly files include this too; they see only the constants.
 */
#ifndef GUEST_H
#define GUEST_H

/* The GDT every guest starts with (lib/runtime.c). SYSENTER/SYSEXIT
 * require exactly this order: kernel code, kernel data, user code, user
 * data (SDM Vol. 2B SYSENTER, SYSEXIT). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1B
#define SEL_UDATA 0x23
#define SEL_TSS   0x28
#define GDT_ENTRIES 32     /* guests add descriptors from index 6 up */

#define STACK_SIZE 16384

/* Exception vectors (SDM Vol. 3A 6.3.1, table 6-1). */
#define T_DE 0
#define T_DB 1
#define T_NMI 2
#define T_BP 3
#define T_OF 4
#define T_BR 5
#define T_UD 6
#define T_NM 7
#define T_DF 8
#define T_TS 10
#define T_NP 11
#define T_SS 12
#define T_GP 13
#define T_PF 14
#define T_MF 16
#define T_AC 17
/* Ring-3 code ends with `int $T_USER_DONE` (a DPL-3 gate). */
#define T_USER_DONE 0x80

#define EFLAGS_CF 0x00000001
#define EFLAGS_FIXED 0x00000002   /* bit 1 always reads as 1 */
#define EFLAGS_ZF 0x00000040
#define EFLAGS_TF 0x00000100
#define EFLAGS_IF 0x00000200
#define EFLAGS_DF 0x00000400
#define EFLAGS_OF 0x00000800
#define EFLAGS_IOPL(n) ((n) << 12)
#define EFLAGS_IOPL_MASK 0x00003000
#define EFLAGS_NT 0x00004000
#define EFLAGS_RF 0x00010000
#define EFLAGS_VM 0x00020000
#define EFLAGS_AC 0x00040000

#define CR0_PE 0x00000001
#define CR0_MP 0x00000002
#define CR0_EM 0x00000004
#define CR0_TS 0x00000008
#define CR0_ET 0x00000010
#define CR0_NE 0x00000020
#define CR0_WP 0x00010000
#define CR0_AM 0x00040000
#define CR0_PG 0x80000000
#define CR4_PSE 0x00000010

#ifndef __ASSEMBLER__

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int uintptr_t;
typedef unsigned int size_t;
#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NORETURN __attribute__((noreturn))

/* ---- x86 instructions C cannot express ---- */

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outb(uint16_t port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

#define DEFINE_CR(n)                                                   \
	static inline uint32_t read_cr##n(void)                        \
	{                                                              \
		uint32_t v;                                            \
		asm volatile("mov %%cr" #n ", %0" : "=r"(v));          \
		return v;                                              \
	}                                                              \
	static inline void write_cr##n(uint32_t v)                     \
	{                                                              \
		asm volatile("mov %0, %%cr" #n : : "r"(v) : "memory"); \
	}
DEFINE_CR(0)
DEFINE_CR(2)
DEFINE_CR(3)
DEFINE_CR(4)
#define DEFINE_DR(n)                                                   \
	static inline uint32_t read_dr##n(void)                        \
	{                                                              \
		uint32_t v;                                            \
		asm volatile("mov %%dr" #n ", %0" : "=r"(v));          \
		return v;                                              \
	}                                                              \
	static inline void write_dr##n(uint32_t v)                     \
	{                                                              \
		asm volatile("mov %0, %%dr" #n : : "r"(v) : "memory"); \
	}
DEFINE_DR(0)
DEFINE_DR(1)
DEFINE_DR(6)
DEFINE_DR(7)

static inline uint32_t read_eflags(void)
{
	uint32_t v;
	asm volatile("pushfl; popl %0" : "=r"(v));
	return v;
}
static inline void invlpg(uint32_t linear)
{
	asm volatile("invlpg (%0)" : : "r"(linear) : "memory");
}
static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c,
			 uint32_t *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}
static inline uint64_t rdmsr(uint32_t msr)
{
	uint64_t v;
	asm volatile("rdmsr" : "=A"(v) : "c"(msr));
	return v;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
	asm volatile("wrmsr" : : "c"(msr), "A"(v));
}
static inline uint16_t read_tr(void)
{
	uint16_t v;
	asm volatile("str %0" : "=r"(v));
	return v;
}
static inline void load_tr(uint16_t sel)
{
	asm volatile("ltr %0" : : "r"(sel) : "memory");
}
static inline void load_ldt(uint16_t sel)
{
	asm volatile("lldt %0" : : "r"(sel) : "memory");
}

/* ---- descriptor tables (lib/runtime.c) ---- */

/* Access byte: P, DPL, S and type (SDM Vol. 3A 3.4.5, 3.5). */
#define ACC_P 0x80
#define ACC_DPL(n) ((n) << 5)
#define ACC_DATA_RO 0x10
#define ACC_DATA_RW 0x12
#define ACC_DATA_RO_DOWN 0x14 /* expand-down */
#define ACC_DATA_RW_DOWN 0x16
#define ACC_CODE_XO 0x18      /* execute-only */
#define ACC_CODE_XR 0x1A      /* execute/read */
#define ACC_CODE_XO_CONF 0x1C /* conforming */
#define ACC_CODE_XR_CONF 0x1E
#define ACC_ACCESSED 0x01
#define ACC_LDT 0x02
#define ACC_TASK_GATE 0x05
#define ACC_TSS32 0x09
#define ACC_TSS32_BUSY 0x0B
#define ACC_CALL_GATE32 0x0C
#define ACC_INT_GATE32 0x0E
#define ACC_TRAP_GATE32 0x0F
/* Flags nibble: granularity and default size. */
#define FLAG_G 0x8
#define FLAG_DB 0x4

#define SELECTOR(index, rpl) ((uint16_t)(((index) << 3) | (rpl)))
#define LDT_SELECTOR(index, rpl) ((uint16_t)(((index) << 3) | 4 | (rpl)))

extern uint64_t gdt[GDT_ENTRIES];
extern uint64_t idt[256];

uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint8_t access,
			    uint8_t flags);
uint64_t gate_descriptor(uint16_t selector, uint32_t offset, uint8_t access,
			 uint8_t param_count);
/* Installs `desc` at GDT `index`; returns the RPL-0 selector. */
uint16_t gdt_set(int index, uint64_t desc);
/* Restores IDT gate `vector` to the runtime's recording stub with the
 * given type (ACC_INT_GATE32 or ACC_TRAP_GATE32) and DPL. */
void idt_set_stub(int vector, uint8_t type, int dpl);
void idt_set(int vector, uint64_t desc);

/* The 32-bit TSS (SDM Vol. 3A 7.2.1, figure 7-2). */
struct tss {
	uint16_t link, link_hi;
	uint32_t esp0;
	uint16_t ss0, ss0_hi;
	uint32_t esp1;
	uint16_t ss1, ss1_hi;
	uint32_t esp2;
	uint16_t ss2, ss2_hi;
	uint32_t cr3, eip, eflags;
	uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint16_t es, es_hi, cs, cs_hi, ss, ss_hi, ds, ds_hi, fs, fs_hi, gs,
		gs_hi, ldt, ldt_hi;
	uint16_t trap, iomap_base;
};
#define TSS_IOMAP_BYTES (65536 / 8)
/* The TSS loaded in TR at start: ESP0 points to a stack of its own, and
 * its I/O permission bitmap denies every port until a guest clears bits.
 * The byte after the bitmap must be 0xFF (SDM Vol. 1 19.5.2). */
struct tss_with_iomap {
	struct tss tss;
	uint8_t iomap[TSS_IOMAP_BYTES + 1];
};
extern struct tss_with_iomap main_tss;
extern uint8_t intr_stack_top[];
extern uint8_t user_stack_top[];

/* ---- exceptions ---- */

#define NO_TRAP (-1)
/* What the last exception pushed, as seen by its handler. */
struct trap_record {
	int vector;            /* NO_TRAP when nothing was raised */
	uint32_t error_code;   /* 0 for vectors that push none */
	uint32_t eip, cs, eflags;
	uint32_t esp, ss;      /* pushed only from an outer ring or VM86 */
	uint32_t frame;        /* linear address of the pushed EIP */
	uint32_t cr2;          /* #PF only */
	uint32_t dr6;          /* #DB only */
	uint32_t v86_es, v86_ds, v86_fs, v86_gs; /* VM86 only */
	uint32_t eax, ecx, edx, ebx, esi, edi, ebp; /* at the exception */
	uint32_t ds, es, fs, gs;   /* as the handler found them */
};
extern struct trap_record last_trap;

/* The stack frame trap.S builds: pushal, data segments, vector and
 * error code, then what the CPU pushed. */
struct trapframe {
	uint32_t edi, esi, ebp, esp_at_pushal, ebx, edx, ecx, eax;
	uint32_t gs, fs, es, ds;
	uint32_t vector, error_code;
	uint32_t eip, cs, eflags;
	uint32_t esp, ss;                         /* outer ring or VM86 */
	uint32_t v86_es, v86_ds, v86_fs, v86_gs;  /* VM86 */
};

/* A handler installed for a vector runs instead of the recording logic;
 * it may edit the frame, and the stub IRETs back through it. Pass NULL to
 * restore recording. */
typedef void (*trap_handler_fn)(struct trapframe *tf);
void set_trap_handler(int vector, trap_handler_fn fn);

/* trap_catch() returns 0, and returns again with 1 when an exception is
 * raised before trap_disarm(); the handler unwinds to it like longjmp,
 * restoring ESP/EBX/ESI/EDI/EBP, flat kernel segments and EFLAGS = 2.
 * Use TRY rather than these directly. */
int trap_catch(void) __attribute__((returns_twice));
void trap_disarm(void);
/* Abandons the current trap frame and unwinds to the last trap_catch(). */
NORETURN void trap_unwind(void);
void record_trap(const struct trapframe *tf);
/* Empties last_trap: vector NO_TRAP, every other field 0. */
void clear_last_trap(void);

/* Runs the statement; returns the exception it raised (vector NO_TRAP
 * if none). DS/ES/FS/GS are flat kernel segments again afterwards. Never
 * `int n` a vector that pushes an error code: the stub would misread
 * the frame (software INT n pushes none, SDM Vol. 3A 6.13). */
#define TRY(...)                               \
	({                                     \
		clear_last_trap();             \
		if (trap_catch() == 0) {       \
			__VA_ARGS__;           \
			trap_disarm();         \
		}                              \
		(const struct trap_record *)&last_trap; \
	})

/* Runs fn at CPL 3 (CS=SEL_UCODE, SS=DS=ES=FS=GS=SEL_UDATA) on the user
 * stack with the given EFLAGS; fn returning executes int $T_USER_DONE.
 * Returns the trap that ended it. */
const struct trap_record *run_user(void (*fn)(void), uint32_t eflags);
NORETURN void user_enter(uint32_t eflags, void (*fn)(void));

/* ---- the test protocol ----
 * A guest calls tests_begin, then test() before each check; a failed
 * expectation prints expected and observed values and exits with the
 * test's number, so the exit status names the first failure. */
void tests_begin(const char *guest);
void test(const char *name);
void expect_eq(const char *what, uint32_t expected, uint32_t observed);
void expect_trap(const struct trap_record *t, int vector, uint32_t error_code);
void expect_no_trap(const struct trap_record *t);
void expect_user_done(const struct trap_record *t);
/* Marks the current test skipped and returns 1, so `if (skip(..)) return;` */
int skip(const char *why);
/* Skips when running under QEMU's TCG, for checks it does not model
 * (README.md lists them). */
int skip_on_qemu(const char *why);
int on_qemu_tcg(void);
NORETURN void tests_done(void);

/* ---- output and exit ---- */
void serial_putc(char c);
void kprintf(const char *fmt, ...);
NORETURN void guest_exit(uint8_t status);

/* ---- memory ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- paging (lib/paging.c) ---- */
#define PTE_P 0x001
#define PTE_W 0x002
#define PTE_U 0x004
#define PTE_A 0x020
#define PTE_D 0x040
#define PDE_PS 0x080
#define PAGE_SIZE 4096
extern uint32_t page_dir[1024];
extern uint32_t page_table_low[1024];
/* Maps 0-4 MiB one-to-one through page_table_low with the given flags
 * (PTE_P is implied); every other directory entry is not present. */
void paging_identity_low(uint32_t flags);
/* Loads CR3 with page_dir, sets CR4.PSE, then CR0.PG and CR0.WP. */
void paging_enable(void);
void paging_disable(void);

/* ---- the guest ---- */
extern uint32_t multiboot_magic;
extern uint32_t multiboot_info;
/* Called once the GDT, IDT and TSS are loaded; its return value is the
 * exit status. */
int guest_main(void);

#endif /* __ASSEMBLER__ */
#endif /* GUEST_H */
