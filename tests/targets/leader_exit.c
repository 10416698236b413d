/*
 * Restore target whose thread-group leader has exited: main starts three
 * threads, prints "ready pid=P" and calls pthread_exit while they run on.
 *
 * usage: leader_exit [eventfd]
 * With "pidfd", a pidfd of itself is open at fd 3 (which the dump refuses).
 * Thread I (0..2) prints "tick I N" and writes "N\n" to counter-I.txt every
 * 20 ms (nanosleep), N from 0 without gaps.
 *
 * The exited leader stays in /proc as the process's PID and as a task of
 * its own, /proc/P/task/P, until the last thread exits (the kernel releases
 * a group leader only after its whole group): /proc/P/status and
 * /proc/P/task/P/status say "State:\tZ (zombie)", /proc/P/stat has state Z,
 * "Threads:\t4" still counts the leader, and /proc/P/task lists P and the
 * three thread TIDs. Having no mm or files any more, the leader shows an
 * empty /proc/P/maps and /proc/P/fd, and no /proc/P/exe or cwd: those are
 * read through a live thread, /proc/P/task/TID/... (as seen on 6.18).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 3

static int started;

static void *count(void *arg)
{
	int index = (int)(long)arg, fd;
	struct timespec twenty_ms = { 0, 20000000 };
	unsigned long n;
	char line[48];

	snprintf(line, sizeof(line), "counter-%d.txt", index);
	fd = open(line, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		_exit(1);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (n = 0;; n++) {
		/* one write per line: the three threads share stdout */
		if (write(STDOUT_FILENO, line, snprintf(line, sizeof(line), "tick %d %lu\n", index, n)) < 0 ||
		    write(fd, line, snprintf(line, sizeof(line), "%lu\n", n)) < 0)
			_exit(1);
		nanosleep(&twenty_ms, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec one_ms = { 0, 1000000 };
	pthread_t thread;
	long i;

	if (argc > 1 && (strcmp(argv[1], "pidfd") || syscall(SYS_pidfd_open, getpid(), 0) != 3))
		return 2;

	for (i = 0; i < THREADS; i++)
		if (pthread_create(&thread, NULL, count, (void *)i))
			return 1;
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < THREADS)
		nanosleep(&one_ms, NULL);
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	pthread_exit(NULL);
}
