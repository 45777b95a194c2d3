/* tasks.h: descriptors shared by tasks.c and tasks.S. */
#define TSS_B_SEL 0x30        /* GDT 6 */
#define TSS_C_SEL 0x38        /* GDT 7 */
#define TASK_GATE_C_SEL 0x40  /* GDT 8: task gate to TSS C */
#define TSS_D_SEL 0x48        /* GDT 9: target of the #GP task gate */
#define TSS_SHORT_SEL 0x50    /* GDT 10: limit below 0x67 */
#define SEL_PAST_GDT 0x1F8    /* beyond the GDT limit: loading it #GPs */

/* Offsets in struct tss (guest.h). */
#define TSS_LINK 0x00
#define TSS_EIP 0x20
