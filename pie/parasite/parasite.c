/*
 * The parasite's C entry and command loop: connect to the runtime, serve
 * commands until the socket closes, then give the task back its own context.
 *
 * Ending on EOF (or any socket error) rather than on FINI is what makes a
 * runtime that dies mid-command harmless: the kernel closes its end, the
 * parasite sees EOF, unmaps its own area and returns the task to the context
 * saved in the sigframe by itself (parasite_exit).
 */
#include "log.h"
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

static long dispatch(struct parasite_ctx *ctx, u32 cmd)
{
	switch (cmd) {
	case PARASITE_CMD_NOOP:
	case PARASITE_CMD_FINI:
		return 0;
	case PARASITE_CMD_ECHO:
		return cmd_echo(ctx);
	case PARASITE_CMD_GET_MISC:
		return cmd_get_misc(ctx);
	case PARASITE_CMD_DUMP_SIGACTIONS:
		return cmd_dump_sigactions(ctx);
	case PARASITE_CMD_DUMP_THREAD:
		return cmd_dump_thread(ctx);
	case PARASITE_CMD_DRAIN_FDS:
		return cmd_drain_fds(ctx);
	case PARASITE_CMD_DUMP_PAGES:
		return cmd_dump_pages(ctx);
	case PARASITE_CMD_DUMP_POSIX_TIMERS:
		return cmd_dump_posix_timers(ctx);
	default:
		return -ENOSYS;
	}
}

static void serve(struct parasite_ctx *ctx)
{
	struct parasite_request req;
	long ret;

	for (;;) {
		ret = channel_recv_request(ctx->sock, &req, &ctx->received_fd);
		if (ret <= 0) {
			log_line("parasite: channel closed (%ld)", ret);
			return;
		}
		ret = dispatch(ctx, req.cmd);
		if (ctx->received_fd >= 0) {
			sys_call1(__NR_close, ctx->received_fd);
			ctx->received_fd = -1;
		}
		if (ret < 0)
			log_line("parasite: command %u failed: %ld", req.cmd, ret);
		ret = channel_send_reply(ctx->sock, req.cmd, ret);
		if (ret < 0) {
			log_line("parasite: reply to command %u failed: %ld", req.cmd, ret);
			return;
		}
	}
}

void parasite_main(const struct parasite_init_args *init)
{
	const volatile struct parasite_thread_call *thread_call = (const void *)init->thread_call;
	struct parasite_ctx ctx = {
		.received_fd = -1,
		.args = (void *)init->cmd_args,
		.args_size = init->cmd_args_size,
		.sigreturn_sp = init->sigreturn_sp,
	};

	log_init(init->log_fd);
	ctx.sock = channel_connect(init->sun_path, init->sun_len);
	if (ctx.sock < 0) {
		log_line("parasite: connect failed: %d", ctx.sock);
	} else {
		log_line("parasite: serving in %ld", sys_call0(__NR_gettid));
		serve(&ctx);
		sys_call1(__NR_close, ctx.sock);
	}
	/*
	 * A thread still running parasite_thread_main (its runtime died) needs the area: it stays, as a
	 * leftover. thread_call is 0 for a loader without threads (tests/c/parasite_echo.c).
	 */
	parasite_exit(ctx.sigreturn_sp, init->area_base, init->area_size,
		      thread_call && thread_call->active ? 0 : init->syscall_ret);
}
