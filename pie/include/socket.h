/*
 * The kernel's AF_UNIX socket ABI on x86_64 as blob code uses it: address,
 * message header and the SCM_RIGHTS control message, declared here because
 * libc's headers cannot be used.
 */
#ifndef PIE_SOCKET_H
#define PIE_SOCKET_H

#include "types.h"

#define AF_UNIX 1
#define SOCK_SEQPACKET 5
#define SOCK_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define MSG_TRUNC 0x20
#define MSG_CTRUNC 0x08
#define MSG_NOSIGNAL 0x4000
#define MSG_CMSG_CLOEXEC 0x40000000

#define UNIX_PATH_MAX 108

struct sockaddr_un {
	u16 sun_family;
	u8 sun_path[UNIX_PATH_MAX];
};

struct iovec {
	void *iov_base;
	size_t iov_len;
};

struct msghdr {
	void *msg_name;
	u32 msg_namelen;
	struct iovec *msg_iov;
	size_t msg_iovlen;
	void *msg_control;
	size_t msg_controllen;
	u32 msg_flags;
};

struct cmsghdr {
	size_t cmsg_len;
	s32 cmsg_level;
	s32 cmsg_type;
};

/* Control data follows the header, each message padded to 8 bytes. */
#define CMSG_ALIGN(len) (((len) + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1))
#define CMSG_LEN(len) (sizeof(struct cmsghdr) + (len))
#define CMSG_SPACE(len) (sizeof(struct cmsghdr) + CMSG_ALIGN(len))
#define CMSG_DATA(cmsg) ((u8 *)((struct cmsghdr *)(cmsg) + 1))

_Static_assert(sizeof(struct sockaddr_un) == 110, "struct sockaddr_un");
_Static_assert(sizeof(struct msghdr) == 56, "struct msghdr");
_Static_assert(sizeof(struct cmsghdr) == 16, "struct cmsghdr");

#endif
