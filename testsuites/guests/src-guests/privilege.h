/* privilege.h: descriptors shared by privilege.c and privilege.S. */
#define GATE_DPL3_SEL 0x33   /* GDT 6, RPL 3: call gate, DPL 3, 2 parameters */
#define GATE_DPL0_SEL 0x3B   /* GDT 7, RPL 3: call gate, DPL 0 */
#define CONFORMING_SEL 0x40  /* GDT 8: conforming readable code, DPL 0 */
#define GATE_PARAMS 2
#define PARAM_FIRST 0x11111111
#define PARAM_SECOND 0x22222222
#define VEC_INT_GATE3 0x81   /* interrupt gate, DPL 3 */
#define VEC_TRAP_GATE3 0x82  /* trap gate, DPL 3 */
#define VEC_INT_GATE0 0x83   /* interrupt gate, DPL 0 */
#define PORT_ALLOWED 0x3FD   /* COM1 line status: reading it is harmless */
#define PORT_DENIED 0x3FC    /* COM1 modem control */
