/*
 * DUMP_THREAD: the per-thread state only the thread itself can read.
 *
 * The blocked mask is not asked from the kernel: the parasite runs with
 * every signal blocked, and the task's own mask is the one the runtime saved
 * in the sigframe that rt_sigreturn will restore.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

long cmd_dump_thread(struct parasite_ctx *ctx)
{
	struct parasite_thread *out = ctx->args;
	struct kernel_stack ss;
	u64 tid_address;
	long ret;

	if (!args_fit(ctx, sizeof(*out)))
		return -EINVAL;
	ret = sys_call2(__NR_sigaltstack, NULL, &ss);
	if (ret < 0)
		return ret;
	/* The kernel stores a whole user pointer (8 bytes) at the address. */
	ret = sys_call2(__NR_prctl, PR_GET_TID_ADDRESS, &tid_address);
	if (ret < 0)
		return ret;
	out->tid = (u32)sys_call0(__NR_gettid);
	out->ss_flags = (u32)ss.ss_flags;
	out->ss_sp = ss.ss_sp;
	out->ss_size = ss.ss_size;
	out->clear_child_tid = tid_address;
	out->blocked = *(const u64 *)(ctx->sigreturn_sp + UCONTEXT_SIGMASK_OFFSET);
	return 0;
}
