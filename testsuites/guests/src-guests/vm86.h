/* vm86.h: numbers shared by vm86.c and vm86.S. */
#define V86_CODE_SEG 0x2000   /* the blob is copied to linear 0x20000 */
#define V86_DATA_SEG 0x3000
#define V86_STACK_TOP 0xFFFE  /* SS = V86_CODE_SEG */
#define VEC_MONITOR 0x30      /* INT 0x30: back to the monitor (gate DPL 3) */
#define VEC_DPL0 0x31         /* a gate VM86 code may not use (DPL 0) */
#define PORT_DENIED 0x3FC     /* COM1 modem control */
