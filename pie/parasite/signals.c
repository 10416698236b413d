/*
 * DUMP_SIGACTIONS: every signal's handler, flags, restorer and mask.
 *
 * Handlers can only be read from inside the task. With a NULL new action
 * rt_sigaction also answers for SIGKILL and SIGSTOP (only changing them is
 * refused), so all 64 entries are what the kernel holds.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

long cmd_dump_sigactions(struct parasite_ctx *ctx)
{
	struct parasite_sigactions *out = ctx->args;
	long ret;
	int sig;

	if (!args_fit(ctx, sizeof(*out)))
		return -EINVAL;
	for (sig = 1; sig <= K_NSIG; sig++) {
		ret = sys_call4(__NR_rt_sigaction, sig, NULL, &out->actions[sig - 1], KERNEL_SIGSET_SIZE);
		if (ret < 0)
			return ret;
	}
	return 0;
}
