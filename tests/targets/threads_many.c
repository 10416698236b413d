/*
 * Restore target with many threads: thread i counts in counters[i] and
 * sleeps 100 ms (nanosleep), forever. Thread 0 is main; the others have
 * 64 KiB stacks so 1000 of them take little memory.
 *
 * usage: threads_many [N]   (1..1000 threads in all, main included; 1000 by default)
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

static void *count(void *arg)
{
	volatile uint64_t *counter = arg;
	struct timespec tenth = { 0, 100000000 };

	(*counter)++;
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		nanosleep(&tenth, NULL);
		(*counter)++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : MAX_THREADS, i;
	struct timespec one_ms = { 0, 1000000 };
	pthread_attr_t attr;
	pthread_t thread;

	if (n < 1 || n > MAX_THREADS) {
		fprintf(stderr, "1..%d threads\n", MAX_THREADS);
		return 2;
	}
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
