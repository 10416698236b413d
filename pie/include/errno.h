/* The errno values blob code returns or tests for (the kernel's numbers, negated in replies). */
#ifndef PIE_ERRNO_H
#define PIE_ERRNO_H

#define EPERM 1
#define EINTR 4
#define EIO 5
#define EBADF 9
#define EAGAIN 11
#define EINVAL 22
#define EPIPE 32
#define ENOSYS 38
#define EPROTO 71
#define ECANCELED 125

#endif
