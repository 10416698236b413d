/*
 * RESTORER_MODE_RESTORE: turn the restoring process into the dumped one.
 *
 * Runs on the restorer's own stack, in the restorer area the runtime chose
 * free in both address spaces. Each step is a named function; the first
 * failure writes a restorer_error record to err_fd and exits, because after
 * unmap_old there is nothing left to return to. On success the tracer sees
 * the int3 stop, and rt_sigreturn enters the task's own context.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"
#include "vdso_proxy.h"

static void fail(const struct restorer_args *args, u32 step, long err, u64 detail)
{
	struct restorer_error rec = { .step = step, .err = err, .detail = detail };

	sys_call3(__NR_write, args->err_fd, &rec, sizeof(rec));
	sys_call1(__NR_exit_group, 1);
	__builtin_unreachable();
}

/* detail is read only after the step ran: C leaves argument evaluation order open. */
static void check(const struct restorer_args *args, u32 step, long ret, const u64 *detail)
{
	/*
	 * Test-only switch (runtime/faults.py): the step named by fail_step is
	 * reported failed although it worked, so a test can fail every step for
	 * real, after its side effects; 0 names no step.
	 */
	if (!ret && step == args->fail_step)
		ret = -ECANCELED;
	if (ret)
		fail(args, step, ret, *detail);
}

/* The process as a whole, before any thread's own state: its memory first, as every later step writes into it. */
static void restore_task(struct restorer_args *args)
{
	const u64 none = 0;
	u64 d = 0;

	check(args, RESTORER_STEP_BLOCK_SIGNALS, block_all_signals(), &none);
	check(args, RESTORER_STEP_UNMAP_OLD, unmap_old(args, &d), &d);
	check(args, RESTORER_STEP_SET_MM_MAP, set_mm_map(args, &d), &d);
	check(args, RESTORER_STEP_MOVE_VDSO, move_vdso(args, &d), &d);
	check(args, RESTORER_STEP_VDSO_PROXY, map_vdso_proxy(&args->vdso_proxy, &d), &d);
	check(args, RESTORER_STEP_MAP_VMAS, map_vmas(args, &d), &d);
	check(args, RESTORER_STEP_FILL_PAGES, fill_pages(args, &d), &d);
	check(args, RESTORER_STEP_PROTECT_VMAS, protect_vmas(args, &d), &d);
	check(args, RESTORER_STEP_ADVISE_VMAS, advise_vmas(args, &d), &d);
	check(args, RESTORER_STEP_SIGACTIONS, restore_sigactions(args, 1, &d), &d);
	check(args, RESTORER_STEP_ITIMERS, restore_itimers(args, &d), &d);
}

/*
 * One thread's own state, set by that thread: the rseq area and TLS it points to live in the memory restored
 * above. The credentials are per thread too, and come last: the steps before may need the runtime's privileges.
 */
static void restore_thread(const struct restorer_args *args, const struct restorer_thread *thread)
{
	u64 d = 0;

	check(args, RESTORER_STEP_REGISTER_RSEQ, register_rseq(thread, &d), &d);
	check(args, RESTORER_STEP_THREAD_AREA, restore_thread_area(thread, &d), &d);
	check(args, RESTORER_STEP_ALTSTACK, restore_altstack(thread, &d), &d);
	check(args, RESTORER_STEP_THREAD_NAME, set_thread_name(thread, &d), &d);
	check(args, RESTORER_STEP_FUTEX_LINKS, set_futex_links(thread, &d), &d);
	check(args, RESTORER_STEP_CREDS, restore_creds(args, &d), &d);
}

/* The block every created thread reads: set once, before the first clone3. */
static struct restorer_args *restoring;

/*
 * A created thread's whole life in the restorer: its state, its own pending signals, the barrier, its own
 * context. Only a thread may queue a kernel or tkill si_code to itself (rt_tgsigqueueinfo), so each queues
 * its own; every signal stays blocked here until its rt_sigreturn installs its mask.
 */
static void __attribute__((noreturn)) thread_body(const struct restorer_thread *thread)
{
	u64 d = 0;

	restore_thread(restoring, thread);
	check(restoring, RESTORER_STEP_PENDING_SIGNALS, queue_thread_signals(thread, restoring->pid, &d), &d);
	thread_ready_wait_go(restoring);
	sigreturn_to_task(thread->sigreturn_sp);
}

void restore_process(struct restorer_args *args)
{
	/* threads[0] is the thread running this code. */
	const struct restorer_thread *self = (const struct restorer_thread *)args->threads;
	const u64 none = 0, sigtrap = 5;
	u64 d = 0;

	restore_task(args);
	restoring = args;
	check(args, RESTORER_STEP_CREATE_THREADS, create_threads(args, thread_body, 0, &d), &d);
	wait_for_threads_ready(args);
	restore_thread(args, self);

	/* The tracer seizes the other threads here, waiting at the barrier. */
	trap_to_tracer();

	/* The forced SIGTRAP unblocked SIGTRAP; nothing may be delivered here. */
	check(args, RESTORER_STEP_BLOCK_SIGNALS, block_all_signals(), &none);
	check(args, RESTORER_STEP_SIGACTIONS, restore_sigtrap_action(args), &sigtrap);
	check(args, RESTORER_STEP_PENDING_SIGNALS, queue_process_signals(args, &d), &d);
	check(args, RESTORER_STEP_PENDING_SIGNALS, queue_thread_signals(self, args->pid, &d), &d);
	check(args, RESTORER_STEP_POSIX_TIMERS, restore_posix_timers(args, &d), &d);
	release_threads(args);
	/* Last: err_fd is among these, and nothing can fail after it. */
	check(args, RESTORER_STEP_CLOSE_FDS, close_fds(args, &d), &d);
	if (args->leader_exits)
		exit_thread();
	sigreturn_to_task(self->sigreturn_sp);
}
