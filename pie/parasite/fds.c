/*
 * DRAIN_FDS: send copies of the task's own descriptors to the runtime.
 *
 * SCM_RIGHTS installs duplicates in the receiver, so the task keeps its
 * descriptors untouched; the batches bound the control message size.
 */
#include "parasite.h"
#include "uapi.h"

long cmd_drain_fds(struct parasite_ctx *ctx)
{
	struct parasite_drain_fds *args = ctx->args;
	u32 done, batch;
	long ret;

	if (!args_fit(ctx, sizeof(*args)) || !args_fit(ctx, sizeof(*args) + (u64)args->nr_fds * sizeof(args->fds[0])))
		return -EINVAL;
	for (done = 0; done < args->nr_fds; done += batch) {
		batch = args->nr_fds - done;
		if (batch > PARASITE_MAX_FDS_PER_MSG)
			batch = PARASITE_MAX_FDS_PER_MSG;
		ret = channel_send_fds(ctx->sock, &args->fds[done], batch);
		if (ret < 0)
			return ret;
	}
	return 0;
}
