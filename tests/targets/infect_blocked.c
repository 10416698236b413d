/* Infection target: the main thread blocked in one syscall, reporting how it ended.
 *
 * infect_blocked read FIFO      read(2) on FIFO (opened O_RDWR so open does not block);
 *                               prints "read N <data>" or "read -1 <errno>"
 * infect_blocked nanosleep MS   nanosleep for MS ms; prints "nanosleep RET ELAPSED_MS"
 * infect_blocked futex FIFO     FUTEX_WAIT without timeout on a word a second thread sets
 *                               and wakes once a byte arrives on FIFO; prints "futex RET errno"
 * infect_blocked futex-timeout MS  FUTEX_WAIT with a relative timeout of MS ms;
 *                               prints "futex-timeout RET errno ELAPSED_MS"
 * Each prints "ready ..." just before blocking, and "done" at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint32_t word;
static int fifo = -1;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *waker(void *unused)
{
	char c;
	(void)unused;
	if (read(fifo, &c, 1) != 1) exit(4);
	__atomic_store_n(&word, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
	return NULL;
}

static void ready(const char *mode)
{
	printf("ready mode=%s pid=%d\n", mode, getpid());
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc != 3) { fprintf(stderr, "usage: infect_blocked MODE ARG\n"); return 2; }
	const char *mode = argv[1];
	if (!strcmp(mode, "read")) {
		char buf[64] = {0};
		fifo = open(argv[2], O_RDWR);
		if (fifo < 0) { perror("open"); return 1; }
		ready(mode);
		ssize_t n = syscall(SYS_read, fifo, buf, sizeof(buf) - 1);
		printf("read %zd %s\n", n, n >= 0 ? buf : strerror(errno));
	} else if (!strcmp(mode, "nanosleep")) {
		long ms = atol(argv[2]);
		struct timespec req = { ms / 1000, (ms % 1000) * 1000000 };
		ready(mode);
		double t0 = now_ms();
		long ret = syscall(SYS_nanosleep, &req, NULL);
		printf("nanosleep %ld %.0f\n", ret, now_ms() - t0);
	} else if (!strcmp(mode, "futex")) {
		pthread_t t;
		fifo = open(argv[2], O_RDWR);
		if (fifo < 0) { perror("open"); return 1; }
		if (pthread_create(&t, NULL, waker, NULL)) return 1;
		ready(mode);
		long ret;
		do
			ret = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
		while (ret == 0 && __atomic_load_n(&word, __ATOMIC_SEQ_CST) == 0);
		printf("futex %ld %d\n", ret, ret ? errno : 0);
	} else if (!strcmp(mode, "futex-timeout")) {
		long ms = atol(argv[2]);
		struct timespec rel = { ms / 1000, (ms % 1000) * 1000000 };
		ready(mode);
		double t0 = now_ms();
		long ret = syscall(SYS_futex, &word, FUTEX_WAIT, 0, &rel, NULL, 0);
		printf("futex-timeout %ld %d %.0f\n", ret, ret ? errno : 0, now_ms() - t0);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	printf("done\n");
	fflush(stdout);
	return 0;
}
