/*
 * Runs the real parasite blob from parasite-blob.h in a forked child, placed
 * at two different addresses in turn, and talks to it as the runtime would:
 * the ECHO command goes through the head, the connect and the dispatcher,
 * and closing the socket makes the parasite leave through rt_sigreturn.
 *
 * Why a signal handler: the parasite's exit is rt_sigreturn on a ucontext
 * (init.sigreturn_sp). Inside an SA_SIGINFO handler the kernel has built
 * exactly such a frame, so the parasite returning through it lands after
 * raise() in the child, which then carries on and exits 0.
 *
 * Exit status 0 and one "round N" line per placement on success.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "protocol.h"
#include "parasite-blob.h"

#define ROUNDS 2
#define ARGS_AREA_SIZE 4096
#define CMD_ARGS_OFFSET 256
#define TIMEOUT_MS 5000

static struct parasite_init_args *init_args;
static void *head;
static pid_t child = -1;

static void fail(const char *what)
{
	perror(what);
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	exit(1);
}

static void on_sigusr1(int sig, siginfo_t *info, void *ucontext)
{
	init_args->sigreturn_sp = (u64)ucontext;
	((void (*)(struct parasite_init_args *))head)(init_args);
	_exit(3); /* the parasite never returns here: it rt_sigreturns on ucontext */
}

static void run_child(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigusr1, .sa_flags = SA_SIGINFO };
	void *placed[ROUNDS];
	int round;

	alarm(20);
	if (sigaction(SIGUSR1, &sa, NULL))
		_exit(4);
	for (round = 0; round < ROUNDS; round++) {
		placed[round] = mmap(NULL, parasite_blob_memory_size, PROT_READ | PROT_WRITE | PROT_EXEC,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (placed[round] == MAP_FAILED)
			_exit(5);
		if (round > 0 && placed[round] == placed[round - 1])
			_exit(6);
		parasite_blob_place(placed[round], (unsigned long)placed[round]);
		head = (char *)placed[round] + parasite_blob_offset____export_parasite_head_start;
		raise(SIGUSR1);
		printf("child: round %d returned from the parasite placed at %p\n", round, placed[round]);
		fflush(stdout);
	}
	_exit(0);
}

static int wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, TIMEOUT_MS) == 1;
}

int main(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct parasite_echo_args *echo;
	socklen_t addr_len;
	char *area;
	int srv, round, status;

	/* Shared so the parent sees what the parasite writes into cmd_args. */
	area = mmap(NULL, ARGS_AREA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		fail("mmap args");
	init_args = (struct parasite_init_args *)area;
	echo = (struct parasite_echo_args *)(area + CMD_ARGS_OFFSET);

	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "revive-echo-test-%d", getpid());
	addr_len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr.sun_path + 1);
	srv = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (srv < 0 || bind(srv, (struct sockaddr *)&addr, addr_len) || listen(srv, 1))
		fail("listen");

	init_args->sun_len = addr_len;
	memcpy(init_args->sun_path, addr.sun_path, addr_len - offsetof(struct sockaddr_un, sun_path));
	init_args->log_fd = 2;
	init_args->cmd_args = (u64)echo;
	init_args->cmd_args_size = ARGS_AREA_SIZE - CMD_ARGS_OFFSET;

	fflush(stdout);
	child = fork();
	if (child < 0)
		fail("fork");
	if (child == 0)
		run_child();

	for (round = 0; round < ROUNDS; round++) {
		struct parasite_request req = { .cmd = PARASITE_CMD_ECHO };
		struct parasite_reply reply = { 0 };
		int conn;

		if (!wait_readable(srv))
			fail("parasite did not connect");
		conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			fail("accept");
		echo->value = 0x5eed0000c0ffee00UL + round;
		echo->echoed = 0;
		if (send(conn, &req, sizeof(req), 0) != sizeof(req))
			fail("send request");
		if (!wait_readable(conn) || recv(conn, &reply, sizeof(reply), 0) != sizeof(reply))
			fail("receive reply");
		if (reply.cmd != PARASITE_CMD_ECHO || reply.ack != 1 || reply.err != 0 || echo->echoed != echo->value) {
			fprintf(stderr, "bad reply: cmd %u ack %u err %ld echoed %#lx\n", reply.cmd, reply.ack, reply.err,
				echo->echoed);
			fail("echo");
		}
		printf("round %d: echoed %#lx\n", round, echo->echoed);
		fflush(stdout);
		close(conn);
	}
	if (waitpid(child, &status, 0) != child)
		fail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "child ended with status %#x\n", status);
		return 1;
	}
	return 0;
}
