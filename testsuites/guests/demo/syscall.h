/*
 * syscall.h: the system call interface, the one file the kernel and user
 * programs share.
 *
 * A user program asks for a service with `int $0x80`. The IDT gate for
 * vector 0x80 has DPL 3, so ring 3 may raise it (any other vector it
 * tries to raise is a #GP: SDM Vol. 3A 6.12.1.1).
 *
 *   EAX  the system call number (below)
 *   EBX  first argument
 *   ECX  second argument
 *   EDX  third argument
 *
 * The result comes back in EAX; every other register, EFLAGS and the
 * stack are as they were. A negative result means the call failed.
 * This is the register convention of Linux on i386, with our own numbers.
 */
#ifndef SYSCALL_H
#define SYSCALL_H

#define T_SYSCALL 0x80

#define SYS_exit   1 /* void exit(int status): never returns */
#define SYS_write  2 /* int write(int fd, const void *buf, int n): fd 1 or 2 */
#define SYS_read   3 /* int read(int fd, void *buf, int n): fd 0, one line at most */
#define SYS_getpid 4 /* int getpid(void) */
#define SYS_yield  5 /* int yield(void): give the CPU to another process */
#define SYS_sleep  6 /* int sleep(int ticks): ticks of the 100 Hz timer */
#define SYS_sbrk   7 /* void *sbrk(int increment): returns the old break */

#endif /* SYSCALL_H */
