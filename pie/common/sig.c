/*
 * The process's signal state: actions, interval timers, the signals pending
 * on the process as a whole, and the final rt_sigreturn into the task's own
 * registers, xstate and mask (the mask comes back through the frame's
 * uc_sigmask), or, for a leader that had exited, the exit instead. A
 * thread's alternate stack and own pending signals are thread-level steps
 * (thread.c).
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

long block_all_signals(void)
{
	u64 all = ~0UL;

	return sys_call4(__NR_rt_sigprocmask, SIG_SETMASK, &all, NULL, KERNEL_SIGSET_SIZE);
}

static long set_action(const struct restorer_args *args, int sig)
{
	return sys_call4(__NR_rt_sigaction, sig, &args->sigactions[sig - 1], NULL, KERNEL_SIGSET_SIZE);
}

long restore_sigactions(const struct restorer_args *args, int skip_sigtrap, u64 *detail)
{
	int sig;

	for (sig = 1; sig <= K_NSIG; sig++) {
		long ret;

		if (sig == SIGKILL || sig == SIGSTOP || (skip_sigtrap && sig == SIGTRAP))
			continue;
		ret = set_action(args, sig);
		if (ret) {
			*detail = sig;
			return ret;
		}
	}
	return 0;
}

long restore_sigtrap_action(const struct restorer_args *args)
{
	/*
	 * The int3 that stops us for the tracer is a forced SIGTRAP: the kernel
	 * resets a blocked or ignored SIGTRAP's action to SIG_DFL when it forces
	 * it, so the task's own action is set only after the trap.
	 */
	return set_action(args, SIGTRAP);
}

long restore_itimers(const struct restorer_args *args, u64 *detail)
{
	int which;

	for (which = 0; which < K_NR_ITIMERS; which++) {
		long ret = sys_call3(__NR_setitimer, which, &args->itimers[which], NULL);

		if (ret) {
			*detail = which;
			return ret;
		}
	}
	return 0;
}

/*
 * What became pending during the restore is not the process's: above all the
 * SIGCHLD of a child that died to become its zombie again (the dumped one, if
 * it was still pending, is among the dumped signals). Every signal is blocked
 * here, so each is dequeued, from the process's queue and this thread's.
 */
static long discard_pending(void)
{
	struct kernel_timespec now = { 0, 0 };
	u64 all = ~0UL;
	long ret;

	do
		ret = sys_call4(__NR_rt_sigtimedwait, &all, NULL, &now, KERNEL_SIGSET_SIZE);
	while (ret > 0);
	return ret == -EAGAIN ? 0 : ret;
}

long queue_process_signals(const struct restorer_args *args, u64 *detail)
{
	/*
	 * The kernel lets a process queue any si_code (even kernel ones) to
	 * itself only; all signals are blocked here, so they stay pending until
	 * rt_sigreturn installs the task's own mask.
	 */
	const struct restorer_siginfo *p = (const struct restorer_siginfo *)args->pending;
	u64 i;
	long ret = discard_pending();

	if (ret)
		return ret;
	for (i = 0; i < args->nr_pending; i++) {
		ret = sys_call3(__NR_rt_sigqueueinfo, args->pid, p[i].signo, p[i].info);
		if (ret) {
			*detail = p[i].signo;
			return ret;
		}
	}
	return 0;
}

void trap_to_tracer(void)
{
	__asm__ volatile("int3" ::: "memory");
}

void exit_thread(void)
{
	/* exit, not exit_group: the leader of a process whose leader had exited becomes that zombie again. */
	sys_call1(__NR_exit, 0);
	__builtin_unreachable();
}

void sigreturn_to_task(u64 sigreturn_sp)
{
	/* rt_sigreturn finds its frame at rsp - 8, where a handler's ret would have left it. */
	__asm__ volatile("movq %0, %%rsp\n\t"
			 "movl %1, %%eax\n\t"
			 "syscall"
			 :
			 : "r"(sigreturn_sp), "i"(__NR_rt_sigreturn)
			 : "memory");
	__builtin_unreachable();
}
