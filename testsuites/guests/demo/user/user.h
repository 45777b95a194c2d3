/*
 * user.h: what a user program can call. The system calls are in
 * ulib.c, each one `int $0x80` (the ABI is in syscall.h); the rest is a
 * small C library built on them.
 */
#ifndef USER_H
#define USER_H

#include "syscall.h"

typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned int size_t;
#define NULL ((void *)0)
#define PAGE_SIZE 4096

/* System calls. */
__attribute__((noreturn)) void exit(int status);
int write(int fd, const void *buf, int n);
int read(int fd, void *buf, int n);
int getpid(void);
int yield(void);
int sleep(int ticks);
void *sbrk(int increment);

/* The library. printf supports %s %c %d %u %x, '0' and a width. */
int printf(const char *fmt, ...);
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif /* USER_H */
