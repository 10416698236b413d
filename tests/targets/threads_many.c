/*
 * Target with many threads: thread i counts in counters[i] and sleeps MS
 * milliseconds (nanosleep), forever. Thread 0 is main; the others have
 * 64 KiB stacks so 1000 of them take little memory.
 *
 * usage: threads_many [N [MS]]   (1..1000 threads in all, main included; 1000 and 100 by default;
 *                                 MS 1 for tests that see progress within milliseconds)
 * Prints "ready pid=P counters=ADDR threads=N" (ADDR the hex address of the
 * uint64_t counters array) once every thread has counted at least once; the
 * process then has exactly N threads.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 1000

static volatile uint64_t counters[MAX_THREADS];
static int started;
static struct timespec interval = { 0, 100000000 };

static void *count(void *arg)
{
	volatile uint64_t *counter = arg;

	(*counter)++;
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		nanosleep(&interval, NULL);
		(*counter)++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : MAX_THREADS, i;
	long ms = argc > 2 ? atol(argv[2]) : 100;
	struct timespec one_ms = { 0, 1000000 };
	pthread_attr_t attr;
	pthread_t thread;

	if (n < 1 || n > MAX_THREADS || ms < 1 || ms > 1000) {
		fprintf(stderr, "usage: threads_many [N [MS]]: 1..%d threads, 1..1000 ms\n", MAX_THREADS);
		return 2;
	}
	interval.tv_sec = ms / 1000;
	interval.tv_nsec = ms % 1000 * 1000000;
	if (pthread_attr_init(&attr) || pthread_attr_setstacksize(&attr, 64 * 1024))
		return 1;
	for (i = 1; i < n; i++)
		if (pthread_create(&thread, &attr, count, (void *)&counters[i]))
			return 1;
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n - 1)
		nanosleep(&one_ms, NULL);
	counters[0]++;
	printf("ready pid=%d counters=%p threads=%d\n", getpid(), (void *)counters, n);
	fflush(stdout);
	count((void *)&counters[0]);
	return 0;
}
