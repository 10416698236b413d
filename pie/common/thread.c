/*
 * The thread-level steps: what the kernel keeps per thread, set for one
 * restorer_thread by the thread itself (each call here acts on the caller).
 *
 * Segment bases: fs_base is glibc's thread pointer (TLS, errno, the rseq
 * area's address). No signal frame carries them, so rt_sigreturn leaves the
 * restoring process's own values in place; they are set here, before the
 * return into the task.
 *
 * rseq: the restoring process unregistered its own glibc area before
 * entering the restorer, so the kernel accepts a new registration (a thread
 * the restorer created starts with none).
 *
 * Futex links: clear_child_tid (zeroed and woken when the thread exits,
 * what pthread_join waits on) and the robust list (walked by the kernel when
 * the thread dies) point into the restored memory; a length the kernel
 * does not take (the one thing set_robust_list refuses) fails the step.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

long register_rseq(const struct restorer_thread *thread, u64 *detail)
{
	if (!thread->rseq_len)
		return 0;
	*detail = thread->rseq_addr;
	return sys_call4(__NR_rseq, thread->rseq_addr, thread->rseq_len, 0, thread->rseq_sig);
}

long restore_thread_area(const struct restorer_thread *thread, u64 *detail)
{
	long ret;

	*detail = thread->fs_base;
	ret = sys_call2(__NR_arch_prctl, ARCH_SET_FS, thread->fs_base);
	if (ret)
		return ret;
	*detail = thread->gs_base;
	return sys_call2(__NR_arch_prctl, ARCH_SET_GS, thread->gs_base);
}

long restore_altstack(const struct restorer_thread *thread, u64 *detail)
{
	struct kernel_stack ss = {
		.ss_sp = thread->ss_sp,
		.ss_flags = thread->ss_flags,
		.ss_size = thread->ss_size,
	};

	*detail = thread->ss_sp;
	return sys_call2(__NR_sigaltstack, &ss, NULL);
}

long set_thread_name(const struct restorer_thread *thread, u64 *detail)
{
	*detail = thread->tid;
	return sys_call2(__NR_prctl, PR_SET_NAME, thread->comm);
}

long set_futex_links(const struct restorer_thread *thread, u64 *detail)
{
	/* set_tid_address returns the caller's tid: it cannot fail. */
	sys_call1(__NR_set_tid_address, thread->clear_child_tid);
	if (!thread->robust_list)
		return 0;
	*detail = thread->robust_list;
	return sys_call2(__NR_set_robust_list, thread->robust_list, thread->robust_list_len);
}

long queue_thread_signals(const struct restorer_thread *thread, u32 pid, u64 *detail)
{
	/* As queue_process_signals (sig.c), but each aimed at this thread alone. */
	const struct restorer_siginfo *p = (const struct restorer_siginfo *)thread->pending;
	u64 i;

	for (i = 0; i < thread->nr_pending; i++) {
		long ret = sys_call4(__NR_rt_tgsigqueueinfo, pid, thread->tid, p[i].signo, p[i].info);

		if (ret) {
			*detail = p[i].signo;
			return ret;
		}
	}
	return 0;
}
