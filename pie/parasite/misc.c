/*
 * ECHO and GET_MISC: the process's view of itself, asked from inside.
 *
 * Ids are read by the task itself so they are the ones of its own pid
 * namespace; rlimits are read with prlimit64 on itself because the runtime
 * may lack the rights to read another user's limits from outside.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

long cmd_echo(struct parasite_ctx *ctx)
{
	struct parasite_echo_args *echo = ctx->args;

	if (!args_fit(ctx, sizeof(*echo)))
		return -EINVAL;
	echo->echoed = echo->value;
	return 0;
}

static long read_ids(struct parasite_misc *misc)
{
	long pgid = sys_call1(__NR_getpgid, 0);
	long sid = sys_call1(__NR_getsid, 0);

	if (pgid < 0)
		return pgid;
	if (sid < 0)
		return sid;
	misc->pid = (u32)sys_call0(__NR_getpid);
	misc->tid = (u32)sys_call0(__NR_gettid);
	misc->ppid = (u32)sys_call0(__NR_getppid);
	misc->pgid = (u32)pgid;
	misc->sid = (u32)sid;
	return 0;
}

/* umask can only be read by setting it: set 0, then put the old value back. */
static void read_umask(struct parasite_misc *misc)
{
	long old = sys_call1(__NR_umask, 0);

	sys_call1(__NR_umask, old);
	misc->umask = (u32)old;
}

static long read_rlimits(struct parasite_misc *misc)
{
	long ret;
	u32 i;

	for (i = 0; i < PARASITE_NR_RLIMITS; i++) {
		ret = sys_call4(__NR_prlimit64, 0, i, NULL, &misc->rlimits[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static long read_itimers(struct parasite_misc *misc)
{
	long ret;
	u32 which;

	for (which = 0; which < K_NR_ITIMERS; which++) {
		ret = sys_call2(__NR_getitimer, which, &misc->itimers[which]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* prctl's GET forms that write an int through arg2 instead of returning it. */
static s64 prctl_int_out(long option)
{
	int value = 0;
	long ret = sys_call2(__NR_prctl, option, &value);

	return ret < 0 ? ret : value;
}

/*
 * The prctl settings the kernel keeps per thread: every thread reads its
 * own (thread.c), and the runtime refuses a thread whose values are not
 * the leader's. The other fields are left 0.
 */
void read_thread_controls(struct parasite_controls *c)
{
	c->pdeath_sig = prctl_int_out(PR_GET_PDEATHSIG);
	c->tsc_mode = prctl_int_out(PR_GET_TSC);
	c->timer_slack = sys_call1(__NR_prctl, PR_GET_TIMERSLACK);
	c->mce_kill = sys_call1(__NR_prctl, PR_MCE_KILL_GET);
	c->securebits = sys_call1(__NR_prctl, PR_GET_SECUREBITS);
}

/*
 * Every prctl setting the runtime restores or refuses (docs/state.md); a
 * negative value is the errno of a kernel that lacks the option.
 */
static void read_controls(struct parasite_controls *c)
{
	read_thread_controls(c);
	c->child_subreaper = prctl_int_out(PR_GET_CHILD_SUBREAPER);
	c->thp_disable = sys_call1(__NR_prctl, PR_GET_THP_DISABLE);
	c->mdwe = sys_call1(__NR_prctl, PR_GET_MDWE);
	c->memory_merge = sys_call1(__NR_prctl, PR_GET_MEMORY_MERGE);
}

long cmd_get_misc(struct parasite_ctx *ctx)
{
	struct parasite_misc *misc = ctx->args;
	long ret;

	if (!args_fit(ctx, sizeof(*misc)))
		return -EINVAL;
	ret = read_ids(misc);
	if (ret < 0)
		return ret;
	read_umask(misc);
	ret = sys_call2(__NR_prctl, PR_GET_DUMPABLE, 0);
	if (ret < 0)
		return ret;
	misc->dumpable = (u32)ret;
	misc->pad0 = 0;
	misc->personality = (u64)sys_call1(__NR_personality, PERSONALITY_QUERY);
	misc->brk = (u64)sys_call1(__NR_brk, 0);
	read_controls(&misc->controls);
	ret = read_rlimits(misc);
	if (ret < 0)
		return ret;
	return read_itimers(misc);
}
