/*
 * Target for the core file: a global counter main raises by one on each SIGUSR1, and two worker threads
 * sleeping in worker_loop, so a debugger has threads, backtraces through named functions and a value to print.
 * Prints "ready pid=.. counter=ADDRESS", then "counter N" after each SIGUSR1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

volatile long counter;
static volatile sig_atomic_t raised;

static void on_usr1(int sig)
{
	(void)sig;
	raised = 1;
}

static __attribute__((noinline)) void *worker_loop(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ten_ms = { 0, 10000000 };

		nanosleep(&ten_ms, NULL);
	}
	return NULL;
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	pthread_t workers[2];
	sigset_t none, usr1;

	/* SIGUSR1 is taken only inside sigsuspend: one that comes while main prints waits for the next one. */
	sigemptyset(&none);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &usr1, NULL) || sigaction(SIGUSR1, &sa, NULL) || pthread_create(&workers[0], NULL, worker_loop, NULL) ||
	    pthread_create(&workers[1], NULL, worker_loop, NULL))
		return 1;
	say("ready pid=%d counter=%p\n", getpid(), (void *)&counter);
	for (;;) {
		sigsuspend(&none);
		if (raised) {
			raised = 0;
			counter++;
			say("counter %ld\n", counter);
		}
	}
}
