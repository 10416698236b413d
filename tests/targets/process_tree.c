/*
 * Process-tree target: a root and its descendants, set up in one of the
 * shapes a tree dump and restore must bring back whole.
 *
 * usage: process_tree MODE
 *
 *   counters      root -> 2 children -> 2 grandchildren each (7 processes).
 *                 Before forking, the root maps one MAP_SHARED|MAP_ANONYMOUS
 *                 page: a shared counter and 7 slots. Every process counts
 *                 its own (private, copy-on-write) counter every 10 ms and
 *                 publishes it in its slot; only the root also counts the
 *                 shared counter. Every 10th count each prints
 *                 "tick PID OWN SHARED" (OWN 10, 20, 30, ...; SHARED the
 *                 shared counter as this process sees it, so it grows in the
 *                 others only while they map the root's page). Ready keys:
 *                 shared=ADDR (the page).
 *   zombie        the root forks two children that exit at once: one with
 *                 exit(7), one killed by its own SIGTERM, and leaves them
 *                 zombies. On SIGUSR1 it reaps both with waitpid(-1) and
 *                 prints "reaped PID exit 7" and "reaped PID signal 15".
 *                 Ready keys: exited=PID killed=PID, printed once both are
 *                 zombies.
 *   session       the root (a session leader) forks two pipeline-like
 *                 groups, as a shell with job control does: a1 leads group
 *                 A and a2 joins it, b1 leads group B and b2 joins it, all
 *                 in the root's session (setpgid in parent and child). On
 *                 SIGUSR1 any of the five prints "usr1 PID". Ready keys:
 *                 a=A1,A2 b=B1,B2.
 *   stopped       the root forks a child that ticks three times and stops
 *                 itself (SIGSTOP); after SIGCONT it ticks on. Ready keys:
 *                 stopped=PID, printed once the child is stopped.
 *   pdeath        the root forks a child with PR_SET_PDEATHSIG = SIGUSR2;
 *                 on SIGUSR2 the child prints "pdeath PID ppid=PPID" and
 *                 exits 0. Ready keys: pdeath=PID.
 *   shared_offset the root opens shared.txt (O_WRONLY|O_CREAT|O_TRUNC, no
 *                 O_APPEND) before forking one child: one open file
 *                 description, one offset. On SIGUSR1 the root writes
 *                 "R N\n", on SIGUSR2 the child "C N\n" (N from 0 each),
 *                 each then prints "wrote PID R|C N". Ready keys: fd=FD
 *                 writer=PID (the child).
 *
 * In every mode the root prints, once the whole tree is set up,
 * "ready root=PID pids=P0,P1,... ppids=Q0,Q1,... KEY=VALUE..." (pids in the
 * mode's order, the root first; ppids each process's parent when it set
 * itself up), and every process that ticks (all in counters, the root in
 * the others, the child in stopped and pdeath) prints "tick PID OWN" every
 * 100 ms, OWN counting 10, 20, 30, ... without gap (counters adds SHARED).
 *
 * All processes share one stdout, a file the harness opened without
 * O_APPEND: one open file description whose offset every write moves. Each
 * line is one write(2), so lines never mix or overwrite each other (the
 * kernel serialises the offset of a shared regular file's description).
 *
 * Set-up: every other process, once set up (and after forking its own
 * children, which inherit the pipe), writes one record (index, pid, ppid) to
 * a pipe and closes it; the root reads one record per process and closes
 * it too, so no pipe is left open once the tree is ready.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "say.h"

#define MAX_PROCS 8

struct record {
	int index;
	pid_t pid, ppid;
};

struct shared_page {
	unsigned long counter;
	unsigned long slots[MAX_PROCS];
};

static int setup_pipe[2];
static struct record tree[MAX_PROCS];
static unsigned long own;
static volatile sig_atomic_t got_usr1, got_usr2;

static void die(const char *what)
{
	say("error %d %s: %s\n", getpid(), what, strerror(errno));
	_exit(2);
}

static void sleep_ms(long ms)
{
	struct timespec req = { ms / 1000, ms % 1000 * 1000000 }, rem;

	while (nanosleep(&req, &rem) && errno == EINTR)
		req = rem;
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_usr1 = 1;
	else
		got_usr2 = 1;
}

static void handle(int sig)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	if (sigaction(sig, &sa, NULL))
		die("sigaction");
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static int take(volatile sig_atomic_t *flag)
{
	if (!*flag)
		return 0;
	*flag = 0;
	return 1;
}

/* One count; every 10th is printed. Private memory: each process has its own `own` after fork. */
static void tick(void)
{
	own++;
	if (own % 10 == 0)
		say("tick %d %lu\n", getpid(), own);
}

/* A non-root process is set up: tell the root, and let go of the set-up pipe. */
static void report(int index)
{
	struct record r = { index, getpid(), getppid() };

	/* One write smaller than PIPE_BUF: records of different processes never mix. */
	if (write(setup_pipe[1], &r, sizeof(r)) != sizeof(r))
		die("report");
	close(setup_pipe[0]);
	close(setup_pipe[1]);
}

static pid_t spawn(int index, void (*body)(int index))
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		body(index);
		_exit(0);
	}
	return pid;
}

/* The root: one record from each of the other n - 1 processes. */
static void collect(int n)
{
	int got = 1;

	tree[0] = (struct record){ 0, getpid(), getppid() };
	close(setup_pipe[1]);
	while (got < n) {
		struct record r;
		ssize_t len = read(setup_pipe[0], &r, sizeof(r));

		if (len < 0 && errno == EINTR)
			continue;
		if (len != sizeof(r) || r.index <= 0 || r.index >= n) {
			errno = len < 0 ? errno : EPROTO;
			die("a process of the tree did not set itself up");
		}
		tree[r.index] = r;
		got++;
	}
	close(setup_pipe[0]);
}

static char state_of(pid_t pid)
{
	char path[32], buf[512], *paren;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open /proc/PID/stat");
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		die("read /proc/PID/stat");
	buf[n] = 0;
	paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' ? paren[2] : '?';
}

static void wait_state(pid_t pid, char state)
{
	while (state_of(pid) != state)
		sleep_ms(1);
}

static void print_ready(int n, const char *fmt, ...)
{
	char pids[MAX_PROCS * 12] = "", ppids[MAX_PROCS * 12] = "", extra[256] = "";
	int i, lp = 0, lq = 0;
	va_list ap;

	for (i = 0; i < n; i++) {
		lp += snprintf(pids + lp, sizeof(pids) - lp, "%s%d", i ? "," : "", tree[i].pid);
		lq += snprintf(ppids + lq, sizeof(ppids) - lq, "%s%d", i ? "," : "", tree[i].ppid);
	}
	va_start(ap, fmt);
	vsnprintf(extra, sizeof(extra), fmt, ap);
	va_end(ap);
	say("ready root=%d pids=%s ppids=%s%s%s\n", tree[0].pid, pids, ppids, extra[0] ? " " : "", extra);
}

/* counters */

#define COUNTERS_PROCS 7

static struct shared_page *page;

static void count_forever(int index)
{
	for (;;) {
		own++;
		page->slots[index] = own;
		if (index == 0)
			__atomic_add_fetch(&page->counter, 1, __ATOMIC_RELAXED);
		if (own % 10 == 0)
			say("tick %d %lu %lu\n", getpid(), own, __atomic_load_n(&page->counter, __ATOMIC_RELAXED));
		sleep_ms(10);
	}
}

static void counters_grandchild(int index)
{
	report(index);
	count_forever(index);
}

static void counters_child(int index)
{
	/* Child 1 has grandchildren 3 and 4, child 2 has 5 and 6. */
	spawn(2 * index + 1, counters_grandchild);
	spawn(2 * index + 2, counters_grandchild);
	report(index);
	count_forever(index);
}

static void run_counters(void)
{
	page = mmap(NULL, sizeof(*page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		die("mmap");
	spawn(1, counters_child);
	spawn(2, counters_child);
	collect(COUNTERS_PROCS);
	print_ready(COUNTERS_PROCS, "shared=%p", (void *)page);
	count_forever(0);
}

/* zombie */

static void exit_seven(int index)
{
	report(index);
	_exit(7);
}

static void kill_self(int index)
{
	sigset_t set;

	report(index);
	signal(SIGTERM, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(SIGTERM);
	_exit(1);
}

static void reap_children(int n)
{
	while (n-- > 0) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0)
			die("waitpid");
		if (WIFEXITED(status))
			say("reaped %d exit %d\n", pid, WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			say("reaped %d signal %d\n", pid, WTERMSIG(status));
		else
			say("reaped %d status %#x\n", pid, status);
	}
}

static void run_zombie(void)
{
	handle(SIGUSR1);
	spawn(1, exit_seven);
	spawn(2, kill_self);
	collect(3);
	wait_state(tree[1].pid, 'Z');
	wait_state(tree[2].pid, 'Z');
	print_ready(3, "exited=%d killed=%d", tree[1].pid, tree[2].pid);
	for (;;) {
		tick();
		if (take(&got_usr1))
			reap_children(2);
		sleep_ms(10);
	}
}

/* session */

static void idle_answering_usr1(void)
{
	for (;;) {
		if (take(&got_usr1))
			say("usr1 %d\n", getpid());
		sleep_ms(10);
	}
}

static pid_t group_leader;

static void join_group(int index)
{
	/* Also done by the parent: whichever runs first, the member is in the group before either goes on. */
	if (setpgid(0, group_leader ? group_leader : 0))
		die("setpgid");
	report(index);
	idle_answering_usr1();
}

static pid_t join(int index, pid_t leader)
{
	pid_t pid;

	group_leader = leader;
	pid = spawn(index, join_group);
	if (setpgid(pid, leader ? leader : pid) && errno != EACCES)
		die("setpgid");
	return pid;
}

static void run_session(void)
{
	pid_t a1, b1;

	handle(SIGUSR1); /* inherited by every child */
	a1 = join(1, 0);
	join(2, a1);
	b1 = join(3, 0);
	join(4, b1);
	collect(5);
	print_ready(5, "a=%d,%d b=%d,%d", tree[1].pid, tree[2].pid, tree[3].pid, tree[4].pid);
	for (;;) {
		tick();
		if (take(&got_usr1))
			say("usr1 %d\n", getpid());
		sleep_ms(10);
	}
}

/* stopped */

static void tick_forever(void)
{
	for (;;) {
		tick();
		sleep_ms(10);
	}
}

static void stop_after_three_ticks(int index)
{
	report(index);
	while (own < 30) {
		tick();
		sleep_ms(10);
	}
	raise(SIGSTOP);
	tick_forever();
}

static void run_stopped(void)
{
	spawn(1, stop_after_three_ticks);
	collect(2);
	wait_state(tree[1].pid, 'T');
	print_ready(2, "stopped=%d", tree[1].pid);
	tick_forever();
}

/* pdeath */

static void die_with_parent(int index)
{
	handle(SIGUSR2);
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2))
		die("PR_SET_PDEATHSIG");
	report(index);
	for (;;) {
		tick();
		if (take(&got_usr2)) {
			say("pdeath %d ppid=%d\n", getpid(), getppid());
			_exit(0);
		}
		sleep_ms(10);
	}
}

static void run_pdeath(void)
{
	spawn(1, die_with_parent);
	collect(2);
	print_ready(2, "pdeath=%d", tree[1].pid);
	tick_forever();
}

/* shared_offset */

static int shared_fd;

static void write_record(const char *who, unsigned long *n)
{
	char rec[32];
	int len = snprintf(rec, sizeof(rec), "%s %lu\n", who, *n);

	if (write(shared_fd, rec, len) != len)
		die("write shared.txt");
	say("wrote %d %s %lu\n", getpid(), who, (*n)++);
}

static void write_on_usr2(int index)
{
	unsigned long n = 0;

	report(index);
	for (;;) {
		if (take(&got_usr2))
			write_record("C", &n);
		sleep_ms(10);
	}
}

static void run_shared_offset(void)
{
	unsigned long n = 0;

	shared_fd = open("shared.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (shared_fd < 0)
		die("open shared.txt");
	handle(SIGUSR1);
	handle(SIGUSR2);
	spawn(1, write_on_usr2);
	collect(2);
	print_ready(2, "fd=%d writer=%d", shared_fd, tree[1].pid);
	for (;;) {
		tick();
		if (take(&got_usr1))
			write_record("R", &n);
		sleep_ms(10);
	}
}

static const struct {
	const char *name;
	void (*run)(void);
} modes[] = {
	{ "counters", run_counters }, { "zombie", run_zombie },	  { "session", run_session },
	{ "stopped", run_stopped },   { "pdeath", run_pdeath }, { "shared_offset", run_shared_offset },
};

int main(int argc, char **argv)
{
	size_t i;

	for (i = 0; argc == 2 && i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(argv[1], modes[i].name))
			continue;
		if (pipe(setup_pipe))
			die("pipe");
		modes[i].run();
		return 0;
	}
	fprintf(stderr, "usage: %s counters|zombie|session|stopped|pdeath|shared_offset\n", argv[0]);
	return 2;
}
