/*
 * The process's POSIX timers, made again with the ids the process knows
 * them by: with PR_TIMER_CREATE_RESTORE_IDS on, timer_create takes the id
 * from its timer_t argument instead of choosing one (EBUSY if taken).
 *
 * Made after the threads exist, since a timer may signal one thread
 * (SIGEV_THREAD_ID), and armed relative: each fires its remaining time
 * after the restore, then at its interval. Every signal is still blocked
 * here, so one that fires before the task runs waits pending.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

/* The kernel's struct sigevent: 64 bytes, the thread id in the union after the three fixed fields. */
struct k_sigevent {
	u64 value;
	s32 signo;
	s32 notify;
	s32 tid;
	u8 pad[44];
};

_Static_assert(sizeof(struct k_sigevent) == 64, "struct sigevent is 64 bytes on x86_64");

static long create_timer(const struct restorer_posix_timer *timer)
{
	struct k_sigevent event = {
		.value = timer->value, .signo = (s32)timer->signo, .notify = (s32)timer->notify, .tid = (s32)timer->tid,
	};
	s32 id = (s32)timer->id;
	long ret = sys_call3(__NR_timer_create, timer->clock, &event, &id);

	if (ret)
		return ret;
	if (id != (s32)timer->id)
		return -EPROTO;
	return sys_call4(__NR_timer_settime, id, 0, &timer->spec, NULL);
}

long restore_posix_timers(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_posix_timer *timers = (const struct restorer_posix_timer *)args->posix_timers;
	long ret = 0;
	u32 i;

	if (!args->nr_posix_timers)
		return 0;
	ret = sys_call2(__NR_prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_ON);
	if (ret)
		return ret;
	for (i = 0; i < args->nr_posix_timers && !ret; i++) {
		*detail = timers[i].id;
		ret = create_timer(&timers[i]);
	}
	if (ret)
		return ret;
	return sys_call2(__NR_prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF);
}
