/* Dump target holding one thing the dump does not support yet, chosen by argv[1]:
 * "thread_creds" (a second thread whose gids a raw setresgid changed, the
 * leader's not), "thread_slack" (a second thread with its own timer slack), "socket" (a socketpair), "eventfd", "pipe"
 * (a pipe at fds 3 and 4), "posix_timer" (timer_create), "flock" (a lock on
 * a file "locked" in the working directory, at fd 3), "seccomp" (strict-free
 * filter mode: a filter that allows everything), "mlock" (a locked page),
 * "child" (a child process that sleeps, killed when its parent dies). Prints "ready" and sleeps.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static __attribute__((noreturn)) void *sleeper(void *arg) {
	(void)arg;
	for (;;) pause();
}

static volatile int gid_changed, slack_set;

static void *own_slack_sleeper(void *arg) {
	prctl(PR_SET_TIMERSLACK, 123456);
	slack_set = 1;
	return sleeper(arg);
}

/* The raw syscall changes this thread alone; glibc's setresgid would change every thread. */
static void *own_gid_sleeper(void *arg) {
	syscall(SYS_setresgid, 4321, 4321, 4321);
	gid_changed = 1;
	return sleeper(arg);
}

int main(int argc, char **argv) {
	int fds[2];
	pthread_t thread;
	pid_t child = 0;
	if (argc != 2) { fprintf(stderr, "usage: dump_refused thread_creds|socket|eventfd|pipe|...\n"); return 2; }
	if (!strcmp(argv[1], "thread_creds")) {
		if (pthread_create(&thread, NULL, own_gid_sleeper, NULL)) return 1;
		while (!gid_changed)
			usleep(1000);
	} else if (!strcmp(argv[1], "thread_slack")) {
		if (pthread_create(&thread, NULL, own_slack_sleeper, NULL)) return 1;
		while (!slack_set)
			usleep(1000);
	} else if (!strcmp(argv[1], "socket")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds)) return 1;
	} else if (!strcmp(argv[1], "eventfd")) {
		if (eventfd(0, 0) < 0) return 1;
	} else if (!strcmp(argv[1], "pipe")) {
		if (pipe(fds)) return 1;
	} else if (!strcmp(argv[1], "posix_timer")) {
		timer_t timer;
		struct sigevent ev = { .sigev_notify = SIGEV_NONE };
		if (timer_create(CLOCK_MONOTONIC, &ev, &timer)) return 1;
	} else if (!strcmp(argv[1], "flock")) {
		int fd = open("locked", O_RDWR | O_CREAT, 0600);
		if (fd < 0 || flock(fd, LOCK_EX)) return 1;
	} else if (!strcmp(argv[1], "seccomp")) {
		struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
		struct sock_fprog prog = { .len = 1, .filter = &allow };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 1;
	} else if (!strcmp(argv[1], "mlock")) {
		static char page[4096] __attribute__((aligned(4096)));
		if (mlock(page, sizeof(page))) return 1;
	} else if (!strcmp(argv[1], "child")) {
		child = fork();
		if (child < 0) return 1;
		if (child == 0) {
			/* Dies with its parent: the test reaps only the parent. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (;;) pause();
		}
	} else {
		return 2;
	}
	printf("ready child=%d\n", (int)child);
	fflush(stdout);
	for (;;) pause();
}
