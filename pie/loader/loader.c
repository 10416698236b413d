/*
 * The exe loader: the entry point of an executable `python -m runtime exe`
 * wrote, which turns the new process the kernel made from it into the
 * dumped one (docs/exe.md tells the whole story).
 *
 * The kernel has already placed the process's anonymous memory from the
 * PT_LOADs, with its pages, and this blob with its argument block. What is
 * left, in order: check the executable and the CPU, enter a user and a PID
 * namespace of the process's own, where it gets its dumped PID and TIDs
 * (namespaces.c: from there on this runs in C2, the process; the one the
 * shell started waits for it), leave the kernel's stack, put the vDSO where
 * the process had it, map what the kernel could not place (the stack, files
 * by path, checked), fill those pages from the executable, protections and
 * advice, the mm fields (brk, arg and env ranges, auxv) with PR_SET_MM_MAP
 * (allowed unprivileged: the exe link is left as it is), signal actions and
 * itimers, descriptors, each thread's own state, pending signals, POSIX
 * timers, and rt_sigreturn into the saved registers. The restore steps are the restorer's own (pie/common/).
 *
 * Nothing is undone on failure: the process has not run a single
 * instruction of its own, so one line on stderr and exit status 1 is all.
 */
#include "loader.h"
#include "log.h"
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

void loader_fail(const char *what, long err, u64 detail)
{
	log_line("revive exe: %s (errno %ld, detail 0x%lx)", what, -err, detail);
	sys_call1(__NR_exit_group, 1);
	__builtin_unreachable();
}

static void step(const char *what, long ret, u64 detail)
{
	if (ret)
		loader_fail(what, ret, detail);
}

/* The mappings the kernel placed from PT_LOADs: their own protections (the zero-filled tail of a PT_LOAD is
 * always read-write) and advice, with the shared steps over a copy of the block naming them. */
static void finish_placed(const struct loader_args *la, const struct restorer_args *args)
{
	struct restorer_args placed = *args;
	u64 d = 0;

	placed.vmas = la->placed;
	placed.nr_vmas = la->nr_placed;
	step("cannot protect a placed mapping", protect_vmas(&placed, &d), d);
	step("the kernel refused a placed mapping's madvise advice", advise_vmas(&placed, &d), d);
}

static void map_the_rest(const struct loader_args *la, struct restorer_args *args)
{
	u64 d = 0;

	open_mapped_files(la);
	step("cannot map a mapping the kernel could not place", map_vmas(args, &d), d);
	check_mapped_files(la);
	step("cannot read the pages of the mappings from the executable", fill_pages(args, &d), d);
	step("cannot protect a mapping", protect_vmas(args, &d), d);
	step("the kernel refused a mapping's madvise advice", advise_vmas(args, &d), d);
	finish_placed(la, args);
}

/* The block every created thread reads: set once, before the first clone3. */
static struct restorer_args *restoring;

/* Outside namespaces (the fallback) every thread has a new TID, which glibc must cache. */
static int new_ids;

/*
 * In its namespaces the thread has every capability there (the user namespace is new); it keeps those of the
 * dumped ones, as the process had them (capabilities are per thread).
 */
static long narrow_caps(const struct restorer_creds *c, u64 *detail)
{
	struct cap_header header = { .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct cap_data now[2], want[2];
	long ret;
	int i;

	*detail = (u64)__NR_capget << 32;
	ret = sys_call2(__NR_capget, &header, now);
	if (ret)
		return ret;
	for (i = 0; i < 2; i++) {
		want[i].permitted = (u32)(c->cap_permitted >> (32 * i)) & now[i].permitted;
		want[i].effective = (u32)(c->cap_effective >> (32 * i)) & want[i].permitted;
		want[i].inheritable = (u32)(c->cap_inheritable >> (32 * i)) & want[i].permitted;
	}
	*detail = (u64)__NR_capset << 32;
	return sys_call2(__NR_capset, &header, want);
}

/*
 * A thread's own state. Outside namespaces its TID is new, and glibc caches it where clear_child_tid points (its
 * TCB): pthread_kill aims with it. In them the TID is the dumped one and the cached one is right.
 */
static void restore_own_thread(struct restorer_thread *thread)
{
	u64 d = 0;
	u32 tid = (u32)sys_call0(__NR_gettid);

	step("cannot register the thread's rseq area", register_rseq(thread, &d), d);
	step("cannot set the thread's fs/gs base", restore_thread_area(thread, &d), d);
	step("cannot set the thread's alternate signal stack", restore_altstack(thread, &d), d);
	step("cannot set the thread's name", set_thread_name(thread, &d), d);
	step("cannot set the thread's futex links", set_futex_links(thread, &d), d);
	if (new_ids) {
		if (thread->clear_child_tid)
			*(u32 *)thread->clear_child_tid = tid;
		thread->tid = tid;
	} else {
		step("cannot narrow the thread's capabilities to the dumped ones", narrow_caps(&restoring->creds, &d), d);
	}
}

/* A created thread's whole life in the loader, as in the restorer (restore.c): its own state, its own pending
 * signals, the barrier, its own context. */
static void __attribute__((noreturn)) thread_body(const struct restorer_thread *thread)
{
	struct restorer_thread *self = (struct restorer_thread *)thread;
	u64 d = 0;

	restore_own_thread(self);
	step("cannot queue a thread's pending signal", queue_thread_signals(self, restoring->pid, &d), d);
	thread_ready_wait_go(restoring);
	sigreturn_to_task(self->sigreturn_sp);
}

void loader_main(struct loader_args *la, u64 *kernel_sp)
{
	struct restorer_args *args = (struct restorer_args *)la->restore;
	struct restorer_thread *self = (struct restorer_thread *)args->threads;
	struct kernel_mappings km;
	long exe, why = 0;
	u64 d = 0;

	(void)kernel_sp;
	log_init(2);
	step("cannot block signals", block_all_signals(), 0);
	exe = open_exe();
	check_exe_checksum((int)exe);
	check_xfeatures(la);
	new_ids = !enter_namespaces(args, &why);
	if (new_ids && args->nr_threads > 1)
		log_line("revive exe: no PID namespace here (errno %ld): the threads resume under new TIDs, and a "
			 "mutex they held that records its owner (error-checking, recursive, robust) is now wrong", -why);
	if (exe != args->pages_fd) {
		step("cannot move the executable's descriptor", sys_call3(__NR_dup3, exe, args->pages_fd, O_CLOEXEC) < 0,
		     (u64)args->pages_fd);
		sys_call1(__NR_close, exe);
	}

	read_kernel_mappings(&km);
	sys_call2(__NR_munmap, km.stack_start, km.stack_end - km.stack_start);
	place_vdso(la, args, &km);
	map_the_rest(la, args);
	step("PR_SET_MM_MAP refused the dumped mm fields", set_mm_map(args, &d), d);
	step("cannot set a signal action", restore_sigactions(args, 0, &d), d);
	step("cannot set an interval timer", restore_itimers(args, &d), d);
	reopen_fds(la);

	/* The other threads, each restoring itself: under their dumped TIDs in the namespaces, else new ones. */
	args->pid = (u32)sys_call0(__NR_getpid);
	restoring = args;
	step("cannot create a thread", create_threads(args, thread_body, new_ids, &d), d);
	wait_for_threads_ready(args);
	restore_own_thread(self);
	step("cannot queue a pending signal", queue_process_signals(args, &d), d);
	step("cannot queue a thread's pending signal", queue_thread_signals(self, args->pid, &d), d);
	step("cannot make a POSIX timer again", restore_posix_timers(args, &d), d);
	release_threads(args);
	step("cannot close the loader's descriptors", close_fds(args, &d), d);
	sigreturn_to_task(self->sigreturn_sp);
}
