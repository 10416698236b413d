/*
 * The restore steps, in pie/common/ because two blobs run them: the
 * restorer (pie/restorer/restore.c) and the exe loader (pie/loader/loader.c,
 * docs/exe.md). The step sequence is each blob's own. Each step returns 0 or a
 * negative errno and may set *detail (e.g. the address it failed at) for
 * the error record.
 *
 * Task-level steps read the argument block's task part and act on the
 * whole process (mm.c, vdso.c, vdso_proxy.c, sig.c); thread-level steps
 * act on the calling thread (thread.c, and creds.c: credentials are per
 * thread), so restoring more threads is running the thread steps once in
 * each (spawn.c creates them).
 */
#ifndef RESTORER_RESTORE_H
#define RESTORER_RESTORE_H

#include "protocol.h"
#include "types.h"

void restore_process(struct restorer_args *args) __attribute__((noreturn));

/* Task-level steps. */
long unmap_old(const struct restorer_args *args, u64 *detail);
long set_mm_map(struct restorer_args *args, u64 *detail);
long map_vmas(const struct restorer_args *args, u64 *detail);
long fill_pages(const struct restorer_args *args, u64 *detail);
long protect_vmas(const struct restorer_args *args, u64 *detail);
long advise_vmas(const struct restorer_args *args, u64 *detail);
long close_fds(const struct restorer_args *args, u64 *detail);

long move_vdso(const struct restorer_args *args, u64 *detail);

long restore_creds(const struct restorer_args *args, u64 *detail);

long block_all_signals(void);
long restore_sigactions(const struct restorer_args *args, int skip_sigtrap, u64 *detail);
long restore_sigtrap_action(const struct restorer_args *args);
long restore_itimers(const struct restorer_args *args, u64 *detail);
long queue_process_signals(const struct restorer_args *args, u64 *detail);
long restore_posix_timers(const struct restorer_args *args, u64 *detail);
void trap_to_tracer(void);
void sigreturn_to_task(u64 sigreturn_sp) __attribute__((noreturn));
void exit_thread(void) __attribute__((noreturn));

/* The other threads and their barrier (spawn.c). */
long create_threads(const struct restorer_args *args, void (*body)(const struct restorer_thread *), int new_tids,
		    u64 *detail);
void wait_for_threads_ready(struct restorer_args *args);
void thread_ready_wait_go(struct restorer_args *args);
void release_threads(struct restorer_args *args);

/* Thread-level steps. */
long register_rseq(const struct restorer_thread *thread, u64 *detail);
long restore_thread_area(const struct restorer_thread *thread, u64 *detail);
long restore_altstack(const struct restorer_thread *thread, u64 *detail);
long set_thread_name(const struct restorer_thread *thread, u64 *detail);
long set_futex_links(const struct restorer_thread *thread, u64 *detail);
long queue_thread_signals(const struct restorer_thread *thread, u32 pid, u64 *detail);

#endif
