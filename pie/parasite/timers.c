/*
 * DUMP_POSIX_TIMERS: each timer's remaining time, interval and overrun.
 *
 * /proc/PID/timers names a process's timers (id, clock, notification) but
 * not when they fire: timer_gettime and timer_getoverrun answer only the
 * process that owns the timer, so the parasite asks them from inside.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

long cmd_dump_posix_timers(struct parasite_ctx *ctx)
{
	struct parasite_posix_timers *req = ctx->args;
	long ret;
	u32 i;

	if (!args_fit(ctx, sizeof(*req)) || !args_fit(ctx, sizeof(*req) + (u64)req->nr_timers * sizeof(req->timers[0])))
		return -EINVAL;
	for (i = 0; i < req->nr_timers; i++) {
		struct parasite_posix_timer *timer = &req->timers[i];

		ret = sys_call2(__NR_timer_gettime, timer->id, &timer->spec);
		if (ret < 0)
			return ret;
		ret = sys_call1(__NR_timer_getoverrun, timer->id);
		if (ret < 0)
			return ret;
		timer->overrun = (u32)ret;
	}
	return 0;
}
