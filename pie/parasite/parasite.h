/*
 * What the parasite's files share: the context one command runs in, and the
 * commands and socket helpers the dispatcher calls.
 */
#ifndef PARASITE_H
#define PARASITE_H

#include "protocol.h"
#include "types.h"

/* One command being served: its argument area and the fd that came with it. */
struct parasite_ctx {
	int sock;
	int received_fd; /* -1 when the request carried none */
	void *args;
	u64 args_size;
	u64 sigreturn_sp;
};

/* Whether the command-args region holds size bytes; commands answer -EINVAL when not. */
static inline int args_fit(const struct parasite_ctx *ctx, u64 size)
{
	return size <= ctx->args_size;
}

__attribute__((noreturn)) void parasite_main(const struct parasite_init_args *init);
__attribute__((noreturn)) void parasite_thread_main(struct parasite_thread_call *call);
__attribute__((noreturn)) void parasite_exit(u64 sigreturn_sp, u64 area_base, u64 area_size, u64 syscall_ret);

int channel_connect(const u8 *sun_path, u32 sun_len);
long channel_recv_request(int sock, struct parasite_request *req, int *received_fd);
long channel_send_reply(int sock, u32 cmd, long err);
long channel_send_fds(int sock, const s32 *fds, u32 count);

void read_thread_controls(struct parasite_controls *c);

long cmd_echo(struct parasite_ctx *ctx);
long cmd_get_misc(struct parasite_ctx *ctx);
long cmd_dump_sigactions(struct parasite_ctx *ctx);
long cmd_dump_thread(struct parasite_ctx *ctx);
long cmd_drain_fds(struct parasite_ctx *ctx);
long cmd_dump_pages(struct parasite_ctx *ctx);
long cmd_dump_posix_timers(struct parasite_ctx *ctx);

#endif
