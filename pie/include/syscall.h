/*
 * Raw x86_64 system calls for blob code: the kernel ABI passes arguments in
 * rdi, rsi, rdx, r10, r8, r9 and clobbers rcx and r11. Returns are raw:
 * -4095..-1 is a negative errno, as the kernel gives it.
 */
#ifndef PIE_SYSCALL_H
#define PIE_SYSCALL_H

#include <asm/unistd_64.h>
#include "types.h"

static inline long sys_call6(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define sys_call0(nr) sys_call6(nr, 0, 0, 0, 0, 0, 0)
#define sys_call1(nr, a) sys_call6(nr, (long)(a), 0, 0, 0, 0, 0)
#define sys_call2(nr, a, b) sys_call6(nr, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys_call3(nr, a, b, c) sys_call6(nr, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys_call4(nr, a, b, c, d) sys_call6(nr, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys_call5(nr, a, b, c, d, e) sys_call6(nr, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#define IS_ERR_VALUE(x) ((unsigned long)(x) >= (unsigned long)-4095)

#endif
