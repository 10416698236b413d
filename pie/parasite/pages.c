/*
 * DUMP_PAGES: vmsplice the task's memory, iovec by iovec, into the pipe the
 * runtime passed with the request, while the runtime splices the other end
 * into the pages image.
 *
 * Without SPLICE_F_GIFT the pipe references the task's pages instead of
 * copying them, which is why the runtime must drain the pipe before the
 * task runs again; the reply comes only after the last byte went in.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

/* Where the next byte to splice is: iovec index and offset inside it. */
struct splice_pos {
	u32 index;
	u64 offset;
};

static void advance(const struct parasite_dump_pages *args, struct splice_pos *pos, u64 bytes)
{
	while (pos->index < args->nr_iovs) {
		u64 left = args->iovs[pos->index].len - pos->offset;

		if (bytes < left) {
			pos->offset += bytes;
			return;
		}
		bytes -= left;
		pos->index++;
		pos->offset = 0;
	}
}

/*
 * One vmsplice call from pos: the iovecs in the argument area as they are
 * when pos is at an iovec's start, else the rest of the cut iovec alone.
 */
static long splice_some(int pipe_fd, const struct parasite_dump_pages *args, const struct splice_pos *pos)
{
	const struct k_iovec *iov = &args->iovs[pos->index];
	struct k_iovec rest;
	u32 count;

	if (pos->offset) {
		rest.base = iov->base + pos->offset;
		rest.len = iov->len - pos->offset;
		return sys_call4(__NR_vmsplice, pipe_fd, &rest, 1, 0);
	}
	count = args->nr_iovs - pos->index;
	if (count > UIO_MAXIOV)
		count = UIO_MAXIOV;
	return sys_call4(__NR_vmsplice, pipe_fd, iov, count, 0);
}

static int sigpipe_pending(void)
{
	u64 pending = 0;

	sys_call2(__NR_rt_sigpending, &pending, KERNEL_SIGSET_SIZE);
	return (pending & SIGMASK(SIGPIPE)) != 0;
}

/*
 * A pipe whose reader is gone makes vmsplice queue SIGPIPE on this thread
 * as well as fail with -EPIPE. Blocked now, it would strike the task once
 * its own mask is back, so the one this command caused is taken off again.
 */
static void discard_own_sigpipe(void)
{
	u64 set = SIGMASK(SIGPIPE);
	struct kernel_timespec now = { 0, 0 };

	sys_call4(__NR_rt_sigtimedwait, &set, NULL, &now, KERNEL_SIGSET_SIZE);
}

static long splice_all(int pipe_fd, struct parasite_dump_pages *args)
{
	struct splice_pos pos = { 0, 0 };
	long ret;

	args->nr_bytes = 0;
	for (;;) {
		/* Empty iovecs are skipped so each call has bytes to move. */
		advance(args, &pos, 0);
		if (pos.index == args->nr_iovs)
			return 0;
		ret = splice_some(pipe_fd, args, &pos);
		if (ret == -EINTR)
			continue;
		if (ret <= 0)
			return ret ? ret : -EIO;
		args->nr_bytes += (u64)ret;
		advance(args, &pos, (u64)ret);
	}
}

long cmd_dump_pages(struct parasite_ctx *ctx)
{
	struct parasite_dump_pages *args = ctx->args;
	int sigpipe_before;
	long ret;

	if (!args_fit(ctx, sizeof(*args)) ||
	    !args_fit(ctx, sizeof(*args) + (u64)args->nr_iovs * sizeof(args->iovs[0])))
		return -EINVAL;
	if (ctx->received_fd < 0)
		return -EBADF;
	sigpipe_before = sigpipe_pending();
	ret = splice_all(ctx->received_fd, args);
	if (ret == -EPIPE && !sigpipe_before && sigpipe_pending())
		discard_own_sigpipe();
	sys_call1(__NR_close, ctx->received_fd);
	ctx->received_fd = -1;
	return ret;
}
