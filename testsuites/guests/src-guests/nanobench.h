/* nanobench.h: what nanobench.c and nanobench.S share. */
/* The ring-3 loops end with `int $VEC_USER_BENCH_DONE` (a DPL-3 gate to
 * the runtime's recording stub), since their own INT 0x80 handler
 * replaces the runtime's T_USER_DONE gate while they run. */
#define VEC_USER_BENCH_DONE 0x81
/* The master 8259A's interrupt mask register (OCW1): reading it has no
 * side effect on the 8259A, ringside and QEMU both answer it, and the
 * value read is the mask the guest wrote (0xFF). */
#define PORT_IN 0x21
/* The local APIC's task-priority register (Intel SDM Vol. 3A 11.8.3.1). */
#define LAPIC_BASE 0xFEE00000
#define LAPIC_TPR 0x80
/* The faulting instructions' lengths: `movl (%ebx), %eax` is 8B 03,
 * `divl %ecx` is F7 F1. */
#define PF_INSN_LEN 2
#define DE_INSN_LEN 2
