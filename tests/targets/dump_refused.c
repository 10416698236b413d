/* Dump target holding one thing the dump does not support yet, chosen by argv[1]:
 * "thread" (a second thread), "socket" (a socketpair), "eventfd", "pipe"
 * (a pipe at fds 3 and 4). Prints "ready" and sleeps.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static __attribute__((noreturn)) void *sleeper(void *arg) {
	(void)arg;
	for (;;) pause();
}

int main(int argc, char **argv) {
	int fds[2];
	pthread_t thread;
	if (argc != 2) { fprintf(stderr, "usage: dump_refused thread|socket|eventfd|pipe\n"); return 2; }
	if (!strcmp(argv[1], "thread")) {
		if (pthread_create(&thread, NULL, sleeper, NULL)) return 1;
	} else if (!strcmp(argv[1], "socket")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds)) return 1;
	} else if (!strcmp(argv[1], "eventfd")) {
		if (eventfd(0, 0) < 0) return 1;
	} else if (!strcmp(argv[1], "pipe")) {
		if (pipe(fds)) return 1;
	} else {
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) pause();
}
