/*
 * Restore target for POSIX timers (timer_create), one of each way to be told:
 *   a: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+1 with value 0xa1, every 20 ms, caught by a handler;
 *   b: CLOCK_REALTIME, SIGEV_THREAD_ID SIGRTMIN+2 with value 0xb2 to a worker thread, every 30 ms,
 *      read there with sigwaitinfo (every other thread blocks it);
 *   c: CLOCK_MONOTONIC, SIGEV_NONE, one shot 1000 s ahead: only timer_gettime sees it run down;
 *   d: glibc's SIGEV_THREAD, every 40 ms, its function run on a thread glibc starts;
 *   e: CLOCK_BOOTTIME, SIGEV_SIGNAL SIGUSR2, never armed.
 * A signal whose si_value or timer id is not its timer's, or that reaches the wrong thread, counts as bad.
 * Prints "ready pid=.. a=ID b=ID c=ID e=ID" (d's id is glibc's), then every 10 ms
 * "tick A_GOOD A_BAD B_GOOD B_BAD D C_LEFT_MS LOST": LOST counts timer_gettime failures (a timer gone).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

static timer_t a, b, c, d, e;
static volatile sig_atomic_t a_good, a_bad, b_good, b_bad, d_count;
static volatile pid_t worker_tid;

static int kernel_id(timer_t timer)
{
	return (int)(intptr_t)timer;
}

static void on_a(int sig, siginfo_t *info, void *uc)
{
	(void)sig, (void)uc;
	if (info->si_code == SI_TIMER && info->si_value.sival_int == 0xa1 && info->si_timerid == kernel_id(a))
		a_good++;
	else
		a_bad++;
}

static void on_d(union sigval value)
{
	if (value.sival_ptr == &d_count)
		d_count++;
}

static void *worker(void *arg)
{
	sigset_t set;
	siginfo_t info;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	worker_tid = (pid_t)syscall(SYS_gettid);
	for (;;) {
		if (sigwaitinfo(&set, &info) < 0)
			continue;
		if (info.si_code == SI_TIMER && info.si_value.sival_int == 0xb2 && info.si_timerid == kernel_id(b) &&
		    syscall(SYS_gettid) == worker_tid)
			b_good++;
		else
			b_bad++;
	}
	return NULL;
}

static int make(clockid_t clock, struct sigevent *ev, timer_t *timer, long interval_ms, long first_ms)
{
	struct itimerspec when = {
		{ interval_ms / 1000, (interval_ms % 1000) * 1000000 }, { first_ms / 1000, (first_ms % 1000) * 1000000 },
	};

	return timer_create(clock, ev, timer) || timer_settime(*timer, 0, &when, NULL);
}

int main(void)
{
	struct sigaction sa = { .sa_sigaction = on_a, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct sigevent ev_a = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 1 };
	struct sigevent ev_b = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 2 };
	struct sigevent ev_c = { .sigev_notify = SIGEV_NONE };
	struct sigevent ev_d = { .sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_d };
	struct sigevent ev_e = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
	pthread_t thread;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (sigaction(SIGRTMIN + 1, &sa, NULL) || pthread_create(&thread, NULL, worker, NULL))
		return 1;
	while (!worker_tid)
		usleep(1000);
	ev_a.sigev_value.sival_int = 0xa1;
	ev_b.sigev_value.sival_int = 0xb2;
	ev_b._sigev_un._tid = worker_tid;
	ev_d.sigev_value.sival_ptr = (void *)&d_count;
	if (make(CLOCK_MONOTONIC, &ev_a, &a, 20, 20) || make(CLOCK_REALTIME, &ev_b, &b, 30, 30) ||
	    make(CLOCK_MONOTONIC, &ev_c, &c, 0, 1000000) || make(CLOCK_MONOTONIC, &ev_d, &d, 40, 40) ||
	    timer_create(CLOCK_BOOTTIME, &ev_e, &e)) {
		perror("timers");
		return 1;
	}
	say("ready pid=%d a=%d b=%d c=%d e=%d\n", getpid(), kernel_id(a), kernel_id(b), kernel_id(c), kernel_id(e));
	for (;;) {
		struct timespec ten_ms = { 0, 10000000 };
		struct itimerspec left;
		timer_t all[] = { a, b, c, d, e };
		int lost = 0;

		while (nanosleep(&ten_ms, &ten_ms))
			;
		for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			lost += timer_gettime(all[i], &left) != 0;
		timer_gettime(c, &left);
		say("tick %d %d %d %d %d %ld %d\n", (int)a_good, (int)a_bad, (int)b_good, (int)b_bad, (int)d_count,
		    (long)left.it_value.tv_sec * 1000 + left.it_value.tv_nsec / 1000000, lost);
	}
}
