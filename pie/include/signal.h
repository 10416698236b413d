/*
 * The kernel's x86_64 signal ABI as blob code uses it: the alternate-stack
 * record and where the blocked mask lives in a signal frame's ucontext.
 */
#ifndef PIE_SIGNAL_H
#define PIE_SIGNAL_H

#include "types.h"

#define SIGPIPE 13

/* rt_sigaction and friends take the size of the kernel's 64-bit sigset. */
#define KERNEL_SIGSET_SIZE 8

#define SIGMASK(sig) (1UL << ((sig) - 1))

struct kernel_stack {
	u64 ss_sp;
	s32 ss_flags;
	u32 pad0;
	u64 ss_size;
};

/*
 * struct ucontext: uc_flags @0, uc_link @8, uc_stack (24 bytes) @16,
 * uc_mcontext (struct sigcontext, 256 bytes) @40, then uc_sigmask.
 */
#define UCONTEXT_SIGMASK_OFFSET 296

struct kernel_timespec {
	s64 tv_sec;
	s64 tv_nsec;
};

_Static_assert(sizeof(struct kernel_stack) == 24, "stack_t");

#endif
