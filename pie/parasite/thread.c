/*
 * The per-thread state only the thread itself can read: in the leader as the
 * DUMP_THREAD command, in every other thread as parasite_thread_main, which
 * the runtime starts in that thread (parked on its own return path, see
 * parasite_thread_call in protocol.toml) while the leader serves commands.
 *
 * The blocked mask is not asked from the kernel: the parasite runs with
 * every signal blocked, and the task's own mask is the one the runtime saved
 * in the sigframe that rt_sigreturn will restore.
 */
#include "parasite.h"
#include "syscall.h"
#include "uapi.h"

static long read_thread_state(struct parasite_thread *out, u64 sigreturn_sp)
{
	struct kernel_stack ss;
	u64 tid_address;
	long ret;

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
	out->blocked = *(const u64 *)(sigreturn_sp + UCONTEXT_SIGMASK_OFFSET);
	read_thread_controls(&out->controls);
	return 0;
}

long cmd_dump_thread(struct parasite_ctx *ctx)
{
	if (!args_fit(ctx, sizeof(struct parasite_thread)))
		return -EINVAL;
	return read_thread_state(ctx->args, ctx->sigreturn_sp);
}

void parasite_thread_main(struct parasite_thread_call *call)
{
	/* The area stays mapped: the leader's parasite still runs in it. */
	call->err = read_thread_state(&call->state, call->sigreturn_sp);
	parasite_exit(call->sigreturn_sp, 0, 0, 0);
}
