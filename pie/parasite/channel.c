/*
 * The parasite's end of the command channel: an AF_UNIX SOCK_SEQPACKET
 * socket, one request or reply per message, fds passed with SCM_RIGHTS.
 *
 * Every send uses MSG_NOSIGNAL: the parasite runs with all signals blocked,
 * so a SIGPIPE raised by a vanished runtime would stay pending and hit the
 * task after it returns to its own signal mask.
 */
#include "parasite.h"
#include "string.h"
#include "syscall.h"
#include "uapi.h"

/* Blocked signals cannot interrupt these calls, but a ptrace stop may. */
static long recvmsg_retry(int sock, struct msghdr *msg, int flags)
{
	long ret;

	do
		ret = sys_call3(__NR_recvmsg, sock, msg, flags);
	while (ret == -EINTR);
	return ret;
}

static long sendmsg_retry(int sock, const struct msghdr *msg)
{
	long ret;

	do
		ret = sys_call3(__NR_sendmsg, sock, msg, MSG_NOSIGNAL);
	while (ret == -EINTR);
	return ret;
}

int channel_connect(const u8 *sun_path, u32 sun_len)
{
	struct sockaddr_un addr;
	long sock, ret;

	if (sun_len <= sizeof(addr.sun_family) || sun_len > sizeof(addr))
		return -EINVAL;
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, sun_path, sun_len - sizeof(addr.sun_family));

	sock = sys_call3(__NR_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return (int)sock;
	do
		ret = sys_call3(__NR_connect, sock, &addr, sun_len);
	while (ret == -EINTR);
	if (ret < 0) {
		sys_call1(__NR_close, sock);
		return (int)ret;
	}
	return (int)sock;
}

/*
 * Returns sizeof(*req) with *received_fd set (or -1), 0 on EOF, or a
 * negative errno. A message of the wrong size or with more than one fd is
 * -EPROTO: the runtime broke the protocol and the session ends.
 */
long channel_recv_request(int sock, struct parasite_request *req, int *received_fd)
{
	/* One byte more than a request, so an oversized message shows. */
	u8 buf[sizeof(*req) + 1];
	union {
		struct cmsghdr hdr;
		u8 space[CMSG_SPACE(sizeof(s32))];
	} control;
	struct k_iovec iov = { .base = (u64)buf, .len = sizeof(buf) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	int fd = -1;
	long n;

	*received_fd = -1;
	n = recvmsg_retry(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		return n;
	if (msg.msg_controllen >= CMSG_LEN(sizeof(s32)) && control.hdr.cmsg_level == SOL_SOCKET &&
	    control.hdr.cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(&control.hdr), sizeof(fd));
	if (n != sizeof(*req) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		if (fd >= 0)
			sys_call1(__NR_close, fd);
		return -EPROTO;
	}
	memcpy(req, buf, sizeof(*req));
	*received_fd = fd;
	return n;
}

long channel_send_reply(int sock, u32 cmd, long err)
{
	struct parasite_reply reply = { .cmd = cmd, .ack = 1, .err = err };
	struct k_iovec iov = { .base = (u64)&reply, .len = sizeof(reply) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	long ret = sendmsg_retry(sock, &msg);

	return ret < 0 ? ret : 0;
}

/* One message: a u32 count followed by that many fds in SCM_RIGHTS. */
long channel_send_fds(int sock, const s32 *fds, u32 count)
{
	union {
		struct cmsghdr hdr;
		u8 space[CMSG_SPACE(sizeof(s32) * PARASITE_MAX_FDS_PER_MSG)];
	} control;
	struct k_iovec iov = { .base = (u64)&count, .len = sizeof(count) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = CMSG_SPACE(sizeof(s32) * count),
	};
	long ret;

	if (count == 0 || count > PARASITE_MAX_FDS_PER_MSG)
		return -EINVAL;
	control.hdr.cmsg_len = CMSG_LEN(sizeof(s32) * count);
	control.hdr.cmsg_level = SOL_SOCKET;
	control.hdr.cmsg_type = SCM_RIGHTS;
	memcpy(CMSG_DATA(&control.hdr), fds, sizeof(s32) * count);
	ret = sendmsg_retry(sock, &msg);
	return ret < 0 ? ret : 0;
}
