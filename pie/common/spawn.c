/*
 * The other threads: created by the restoring thread with clone3 and
 * set_tid, so each gets its dumped TID, once the memory and signal actions
 * are in place (and while the restoring thread still has the runtime's
 * credentials, which clone3 copies and set_tid needs). Each new thread runs
 * on its own stack inside the restorer area and sets its own state (thread.c);
 * then it waits at a barrier, because no thread may run its own code before
 * every thread exists, the tracer has seen the whole process, and the
 * signals pending on each are queued again.
 *
 * The barrier is two words of the argument block: threads_ready counts the
 * threads whose state is set (the restoring thread sleeps on it), and
 * threads_go, once set, lets them all return into their own context.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

#define THREAD_CLONE_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM)

/* restorer_head.S: clone3 that, in the new thread, calls fn(arg) on the new stack. */
long restorer_clone_thread(struct clone_args *args, u64 size, void (*fn)(const struct restorer_thread *),
			   const struct restorer_thread *arg);

/*
 * new_tids: the exe loader's case, where no set_tid is allowed (it needs CAP_CHECKPOINT_RESTORE): each thread
 * gets whatever TID the kernel gives, and sets its restorer_thread's tid itself (loader.c).
 */
long create_threads(const struct restorer_args *args, void (*body)(const struct restorer_thread *), int new_tids,
		    u64 *detail)
{
	const struct restorer_thread *threads = (const struct restorer_thread *)args->threads;
	u32 i;

	for (i = 1; i < args->nr_threads; i++) {
		s32 tid = (s32)threads[i].tid; /* set_tid points at pid_t values */
		struct clone_args clone = {
			.flags = THREAD_CLONE_FLAGS,
			.stack = threads[i].stack - RESTORER_THREAD_STACK_SIZE,
			.stack_size = RESTORER_THREAD_STACK_SIZE,
			.set_tid = new_tids ? 0 : (u64)&tid,
			.set_tid_size = new_tids ? 0 : 1,
		};
		long ret;

		*detail = (u64)tid;
		ret = restorer_clone_thread(&clone, sizeof(clone), body, &threads[i]);
		if (ret < 0)
			return ret;
		if (!new_tids && ret != tid)
			return -EEXIST;
	}
	return 0;
}

void wait_for_threads_ready(struct restorer_args *args)
{
	u32 ready;

	while ((ready = __atomic_load_n(&args->threads_ready, __ATOMIC_ACQUIRE)) != args->nr_threads - 1)
		sys_call4(__NR_futex, &args->threads_ready, FUTEX_WAIT_PRIVATE, ready, NULL);
}

void thread_ready_wait_go(struct restorer_args *args)
{
	__atomic_add_fetch(&args->threads_ready, 1, __ATOMIC_RELEASE);
	sys_call3(__NR_futex, &args->threads_ready, FUTEX_WAKE_PRIVATE, 1);
	while (!__atomic_load_n(&args->threads_go, __ATOMIC_ACQUIRE))
		sys_call4(__NR_futex, &args->threads_go, FUTEX_WAIT_PRIVATE, 0, NULL);
}

void release_threads(struct restorer_args *args)
{
	__atomic_store_n(&args->threads_go, 1, __ATOMIC_RELEASE);
	sys_call3(__NR_futex, &args->threads_go, FUTEX_WAKE_PRIVATE, 0x7fffffff);
}
