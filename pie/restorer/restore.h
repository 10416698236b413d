/*
 * The restorer's steps, one file per concern (mm.c, vdso.c, sig.c, rseq.c, creds.c),
 * run in order by restore.c. Each step returns 0 or a negative errno and may
 * set *detail (e.g. the address it failed at) for the error record.
 */
#ifndef RESTORER_RESTORE_H
#define RESTORER_RESTORE_H

#include "types.h"
#include "protocol.h"

/* Highest user address + 1 with 4-level paging (the kernel's TASK_SIZE). */
#define RESTORER_TASK_SIZE 0x7ffffffff000UL

void restore_process(struct restorer_args *args) __attribute__((noreturn));

long unmap_old(const struct restorer_args *args, u64 *detail);
long set_mm_map(struct restorer_args *args, u64 *detail);
long map_vmas(const struct restorer_args *args, u64 *detail);
long fill_pages(const struct restorer_args *args, u64 *detail);
long protect_vmas(const struct restorer_args *args, u64 *detail);
long advise_vmas(const struct restorer_args *args, u64 *detail);
long close_fds(const struct restorer_args *args, u64 *detail);

long move_vdso(const struct restorer_args *args, u64 *detail);

long register_rseq(const struct restorer_args *args, u64 *detail);

long restore_thread_area(const struct restorer_args *args, u64 *detail);

long restore_creds(const struct restorer_args *args, u64 *detail);

long block_all_signals(void);
long restore_sigactions(const struct restorer_args *args, int skip_sigtrap, u64 *detail);
long restore_sigtrap_action(const struct restorer_args *args);
long restore_altstack(const struct restorer_args *args, u64 *detail);
long restore_itimers(const struct restorer_args *args, u64 *detail);
long queue_pending_signals(const struct restorer_args *args, u64 *detail);
void trap_to_tracer(void);
void sigreturn_to_task(u64 sigreturn_sp) __attribute__((noreturn));

#endif
