/* Dump target holding one thing the dump does not support yet, chosen by argv[1]:
 * "thread_creds" (a second thread whose gids a raw setresgid changed, the
 * leader's not), "thread_slack" (a second thread with its own timer slack),
 * "thread_seccomp" (a second thread under a seccomp filter of its own),
 * "socket" (a netlink socket), "pidfd" (a pidfd of itself), "pipe"
 * (a pipe at fds 3 and 4), "cpu_timer" (a POSIX timer on a second thread's CPU clock), "flock" (a lock on
 * a file "locked" of the working directory, deleted since, at fd 3), "seccomp" (strict-free
 * filter mode: a filter that allows everything), "mlock" (a locked page),
 * "child" (a child process holding a pidfd, killed when its parent dies: the tree
 * is refused for what the child holds), "vfork" (a vfork child that neither execs nor
 * exits: the parent waits in vfork; the child prints the ready line). Prints "ready"
 * and sleeps.
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
#include <sys/syscall.h>
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

static int allow_all_filter(void) {
	struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = { .len = 1, .filter = &allow };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* Each changes the calling thread alone (a raw setresgid: glibc's would change every thread). */
static void own_gids(void) { syscall(SYS_setresgid, 4321, 4321, 4321); }
static void own_slack(void) { prctl(PR_SET_TIMERSLACK, 123456); }
static void own_seccomp(void) { allow_all_filter(); }

static void (*thread_setup)(void);
static volatile int thread_ready;

static void *set_up_and_sleep(void *arg) {
	thread_setup();
	thread_ready = 1;
	return sleeper(arg);
}

/* A second thread that runs setup and sleeps; returns once setup ran. */
static int start_thread_with(void (*setup)(void)) {
	pthread_t thread;

	thread_setup = setup;
	if (pthread_create(&thread, NULL, set_up_and_sleep, NULL)) return -1;
	while (!thread_ready)
		usleep(1000);
	return 0;
}

int main(int argc, char **argv) {
	int fds[2];
	pid_t child = 0;
	if (argc != 2) { fprintf(stderr, "usage: dump_refused thread_creds|socket|eventfd|pipe|...\n"); return 2; }
	if (!strcmp(argv[1], "thread_creds")) {
		if (start_thread_with(own_gids)) return 1;
	} else if (!strcmp(argv[1], "thread_slack")) {
		if (start_thread_with(own_slack)) return 1;
	} else if (!strcmp(argv[1], "thread_seccomp")) {
		if (start_thread_with(own_seccomp)) return 1;
	} else if (!strcmp(argv[1], "socket")) {
		if (socket(AF_NETLINK, SOCK_RAW, 0) < 0) return 1;
	} else if (!strcmp(argv[1], "pidfd")) {
		if (syscall(SYS_pidfd_open, getpid(), 0) < 0) return 1;
	} else if (!strcmp(argv[1], "pipe")) {
		if (pipe(fds)) return 1;
	} else if (!strcmp(argv[1], "cpu_timer")) {
		pthread_t thread;
		clockid_t clock;
		timer_t timer;
		struct sigevent ev = { .sigev_notify = SIGEV_NONE };
		if (pthread_create(&thread, NULL, sleeper, NULL) || pthread_getcpuclockid(thread, &clock) ||
		    timer_create(clock, &ev, &timer)) return 1;
	} else if (!strcmp(argv[1], "flock")) {
		int fd = open("locked", O_RDWR | O_CREAT, 0600);
		if (fd < 0 || flock(fd, LOCK_EX) || unlink("locked")) return 1;
	} else if (!strcmp(argv[1], "seccomp")) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || allow_all_filter()) return 1;
	} else if (!strcmp(argv[1], "mlock")) {
		static char page[4096] __attribute__((aligned(4096)));
		if (mlock(page, sizeof(page))) return 1;
	} else if (!strcmp(argv[1], "child")) {
		child = fork();
		if (child < 0) return 1;
		if (child == 0) {
			/* Dies with its parent: the test reaps only the parent. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (syscall(SYS_pidfd_open, getpid(), 0) < 0) return 1;
			for (;;) pause();
		}
	} else if (!strcmp(argv[1], "vfork")) {
		/* The child runs on the parent's memory and stack until it execs or exits: neither comes. */
		if (vfork() == 0) {
			char line[64];
			int n = snprintf(line, sizeof(line), "ready child=%d parent=%d\n", (int)getpid(), (int)getppid());

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (write(1, line, n) != n) _exit(1);
			for (;;) pause();
		}
		return 1;
	} else {
		return 2;
	}
	printf("ready child=%d\n", (int)child);
	fflush(stdout);
	for (;;) pause();
}
