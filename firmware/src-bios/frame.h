/* The register frame of the larger 16-bit services (INT 10h, 13h, 15h).
 *
 * SERVICE_ENTER saves every register the caller can see on the caller's
 * own stack (56 bytes with the INT frame) and points BP at the frame, so
 * a service reads its inputs and writes its outputs at F_xx(%bp) (BP
 * addresses through SS, the caller's stack) and may clobber the live
 * registers freely. SERVICE_RETURN reloads them all and IRETs, with the
 * FLAGS image (CF, ZF) the service left at F_FLAGS(%bp). */
#ifndef FRAME_H
#define FRAME_H

#define F_GS    0
#define F_FS    2
#define F_ES    4
#define F_DS    6
#define F_DI    8
#define F_SI    12
#define F_BP    16
#define F_BX    24
#define F_DX    28
#define F_CX    32
#define F_AX    36
#define F_IP    40
#define F_CS    42
#define F_FLAGS 44

#define FLAG_CF 0x01
#define FLAG_ZF 0x40

.macro SERVICE_ENTER
	pushal
	push	%ds
	push	%es
	push	%fs
	push	%gs
	mov	%sp, %bp
.endm

.macro SERVICE_RETURN
	pop	%gs
	pop	%fs
	pop	%es
	pop	%ds
	popal
	iret
.endm

/* Result flags for the caller: INT saved its FLAGS, IRET restores them. */
.macro SET_CF
	orb	$FLAG_CF, F_FLAGS(%bp)
.endm

.macro CLEAR_CF
	andb	$~FLAG_CF, F_FLAGS(%bp)
.endm

#endif
