/* Infection target: N threads (argv[1]) each counting in counters[i] with a 1 ms
 * raw nanosleep per count. Prints "ready pid=P counters=ADDR threads=N" once
 * every thread runs.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static volatile uint64_t counters[MAX_THREADS];
static int started;

static void *count(void *arg)
{
	volatile uint64_t *counter = arg;
	const struct timespec one_ms = {0, 1000000};
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		(*counter)++;
		syscall(SYS_nanosleep, &one_ms, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	if (n < 1 || n > MAX_THREADS) { fprintf(stderr, "1..%d threads\n", MAX_THREADS); return 2; }
	pthread_t t;
	for (int i = 1; i < n; i++)
		if (pthread_create(&t, NULL, count, (void *)&counters[i])) return 1;
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n - 1)
		usleep(1000);
	printf("ready pid=%d counters=%p threads=%d\n", getpid(), (void *)counters, n);
	fflush(stdout);
	count((void *)&counters[0]);
	return 0;
}
