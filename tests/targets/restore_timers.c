/*
 * Restore target for the alternate signal stack and interval timers.
 *
 * An ITIMER_REAL fires SIGALRM every 20 ms; its handler (SA_ONSTACK) counts
 * the alarms and how many of them ran on the alternate stack. Every 10 ms
 * the main loop prints "tick ALARMS ONSTACK SS_SP SS_SIZE INTERVAL_USEC",
 * the last three as the process sees them now (sigaltstack, getitimer).
 * Prints "ready pid=.. ss_sp=0x.. ss_size=.." first.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ALT_SIZE (64 * 1024)

static char *alt_stack;
static volatile sig_atomic_t alarms, on_alt_stack;

static void on_alarm(int sig)
{
	char here;

	alarms++;
	if (&here >= alt_stack && &here < alt_stack + ALT_SIZE)
		on_alt_stack++;
}

int main(void)
{
	alt_stack = aligned_alloc(4096, ALT_SIZE);
	stack_t ss = { .ss_sp = alt_stack, .ss_size = ALT_SIZE };
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_ONSTACK | SA_RESTART };
	struct itimerval every_20ms = { { 0, 20000 }, { 0, 20000 } };

	if (sigaltstack(&ss, NULL) || sigaction(SIGALRM, &sa, NULL) || setitimer(ITIMER_REAL, &every_20ms, NULL)) {
		perror("setup");
		return 1;
	}
	printf("ready pid=%d ss_sp=%p ss_size=%d\n", getpid(), (void *)alt_stack, ALT_SIZE);
	fflush(stdout);
	for (;;) {
		struct timespec ten_ms = { 0, 10000000 };
		struct itimerval now;
		stack_t cur;

		while (nanosleep(&ten_ms, &ten_ms))
			;
		sigaltstack(NULL, &cur);
		getitimer(ITIMER_REAL, &now);
		printf("tick %d %d %p %zu %ld\n", (int)alarms, (int)on_alt_stack, cur.ss_sp, cur.ss_size,
		       (long)now.it_interval.tv_usec);
		fflush(stdout);
	}
}
