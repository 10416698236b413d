/*
 * The process under its own PID and TIDs: the executable runs it in a new
 * user namespace and PID namespace of its own (docs/exe.md, "PIDs").
 *
 * Why: what the process holds of its ids stays right only if they stay the
 * same. glibc's error-checking, recursive and robust mutexes keep their
 * owner's TID in __owner and compare it with the TID glibc caches in the
 * thread's control block; the process may have written its PID anywhere.
 * A PID namespace lets clone3's set_tid give each thread its dumped id, and
 * a new user namespace owns that PID namespace, so set_tid's privilege
 * (CAP_CHECKPOINT_RESTORE there) is had by any user.
 *
 * Three processes. P, the one the shell started, unshares both namespaces,
 * maps the dumped uid and gid onto its own (one line each, what an
 * unprivileged process may write) and clones C1, the new PID namespace's
 * pid 1. C1 clones C2 with set_tid = the dumped PID; C2 returns from here
 * and does the whole restore, its other threads made with their dumped
 * TIDs. C1 is the namespace's init: it reaps whatever is reparented to it,
 * and when C2 ends it hands C2's wait status to P and exits (the kernel
 * then kills what is left in the namespace). P forwards what processes
 * send it to C2 and, when C1 is gone, ends as C2 ended: the shell sees the
 * process's status.
 *
 * P and C1 share one descriptor table (CLONE_FILES), so the pidfd C1's
 * clone3 gives for C2 is P's too: C1 sends its number down a pipe, and
 * P signals C2 through it, race-free. C2 gets its own copy of the table and
 * closes what is P's. P reads the signals sent to it from a signalfd
 * (every signal stays blocked in all three until C2's rt_sigreturn), SIGCHLD
 * among them: C1's end.
 */
#include "loader.h"
#include "log.h"
#include "restore.h"
#include "string.h"
#include "syscall.h"
#include "uapi.h"

/* What P sets up and C2 closes: a pipe from C1 to P and P's signalfd (in the table P and C1 share). */
struct outer_fds {
	int pipe[2];
	int signals;
};

static long clone3(struct clone_args *args)
{
	return sys_call2(__NR_clone3, args, sizeof(*args));
}

static char *put_u32(char *p, u32 v)
{
	char digits[10];
	int n = 0;

	do
		digits[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n)
		*p++ = digits[--n];
	return p;
}

static long write_file(const char *path, const char *text)
{
	long fd = sys_call4(__NR_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC, 0);
	long ret;

	if (fd < 0)
		return fd;
	ret = sys_call3(__NR_write, fd, text, strlen(text));
	sys_call1(__NR_close, fd);
	return ret < 0 ? ret : 0;
}

/* "INSIDE OUTSIDE 1": the one line an unprivileged writer may put in its own new namespace's map. */
static void map_id(const char *path, u32 inside, u32 outside)
{
	char line[32], *p = put_u32(line, inside);
	long ret;

	*p++ = ' ';
	p = put_u32(p, outside);
	memcpy(p, " 1\n", 4);
	ret = write_file(path, line);
	if (ret)
		loader_fail("cannot write the new user namespace's id maps", ret, inside);
}

static long read_word(int fd, s32 *word)
{
	return sys_call3(__NR_read, fd, word, sizeof(*word)) == sizeof(*word) ? 0 : -1;
}

static u32 exit_code(s32 status)
{
	return (status & 0x7f) ? 128 + (u32)(status & 0x7f) : (u32)(status >> 8 & 0xff);
}

/* P ends as C2 did: its exit code, or killed by its signal (with no core: P's memory is not the process's). */
static void __attribute__((noreturn)) end_as(s32 status)
{
	int sig = status & 0x7f;

	if (sig) {
		struct kernel_rlimit no_core = { 0, 0 };
		struct k_sigaction dfl = { 0 };
		u64 mask = SIGMASK(sig);

		sys_call4(__NR_prlimit64, 0, RLIMIT_CORE, &no_core, NULL);
		sys_call4(__NR_rt_sigaction, sig, &dfl, NULL, KERNEL_SIGSET_SIZE);
		sys_call2(__NR_kill, sys_call0(__NR_getpid), sig);
		sys_call4(__NR_rt_sigprocmask, SIG_UNBLOCK, &mask, NULL, KERNEL_SIGSET_SIZE);
	}
	sys_call1(__NR_exit_group, exit_code(status));
	__builtin_unreachable();
}

/* P stops as a program does on sig: raised while blocked, then let through (and blocked again once continued). */
static void stop_as(int sig)
{
	u64 mask = SIGMASK(sig);

	sys_call2(__NR_kill, sys_call0(__NR_getpid), sig);
	sys_call4(__NR_rt_sigprocmask, SIG_UNBLOCK, &mask, NULL, KERNEL_SIGSET_SIZE);
	sys_call4(__NR_rt_sigprocmask, SIG_BLOCK, &mask, NULL, KERNEL_SIGSET_SIZE);
}

/*
 * A signal P received. Sent by a process (si_code <= 0: kill, sigqueue, tgkill): forwarded to C2. Sent by the
 * kernel: a terminal's signals go to the whole foreground process group, C2 included, so they are not sent
 * again; a terminal's stop (Ctrl-Z) stops P as well, so the shell sees the job stop (its SIGCONT, to the group,
 * continues both). What else the kernel sends P is P's own.
 */
static void forward(const struct signalfd_info *si, int target, u64 *early)
{
	if (si->code > 0) {
		if (si->code == SI_KERNEL && (si->signo == SIGTSTP || si->signo == SIGTTIN || si->signo == SIGTTOU))
			stop_as((int)si->signo);
		return;
	}
	if (target < 0)
		*early |= SIGMASK(si->signo);
	else
		sys_call4(__NR_pidfd_send_signal, target, si->signo, NULL, 0);
}

/* C1 has ended: P ends as C2 did (C1 sent its status), or as C1 did (it failed, and said why, or was killed). */
static void end_with_c1(const struct outer_fds *o, s32 target, const struct child_siginfo *info)
{
	s32 status;

	if (target < 0)
		read_word(o->pipe[0], &target);
	if (!read_word(o->pipe[0], &status))
		end_as(status);
	end_as(info->code == CLD_EXITED ? (info->status & 0xff) << 8 : info->status & 0x7f);
}

static void __attribute__((noreturn)) outer_loop(const struct outer_fds *o, s32 c1)
{
	struct pollfd fds[2] = {
		{ .fd = o->pipe[0], .events = POLLIN },
		{ .fd = o->signals, .events = POLLIN },
	};
	s32 target = -1;
	u64 early = 0;

	for (;;) {
		struct signalfd_info si;
		long ret = sys_call5(__NR_ppoll, fds, 2, NULL, NULL, KERNEL_SIGSET_SIZE);

		if (ret < 0 && ret != -EINTR)
			loader_fail("cannot wait for the resumed process", ret, 0);
		if (fds[0].revents && target < 0 && !read_word(o->pipe[0], &target)) {
			int sig;

			fds[0].fd = -1; /* what follows, C2's status, is read once C1 has ended */
			for (sig = 1; sig <= K_NSIG; sig++)
				if (early & SIGMASK(sig))
					sys_call4(__NR_pidfd_send_signal, target, sig, NULL, 0);
		}
		if (!fds[1].revents || sys_call3(__NR_read, o->signals, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.signo == SIGCHLD) {
			struct child_siginfo info;

			memset(&info, 0, sizeof(info));
			if (!sys_call5(__NR_waitid, P_PID, c1, &info, WEXITED | WNOHANG, NULL) && info.pid == c1)
				end_with_c1(o, target, &info);
			continue;
		}
		forward(&si, target, &early);
	}
}

/* C1, pid 1 of the namespace: every signal stays blocked (it has no handlers); it reaps until C2 ends. */
static void __attribute__((noreturn)) init_loop(u32 pid, int pipe_w)
{
	for (;;) {
		s32 status = 0;
		long got = sys_call4(__NR_wait4, -1, &status, WALL, NULL);

		if (got == (long)pid) {
			sys_call3(__NR_write, pipe_w, &status, sizeof(status));
			sys_call1(__NR_exit_group, exit_code(status));
		}
		if (got < 0 && got != -EINTR)
			loader_fail("pid 1 of the process's namespace lost the process", got, pid);
	}
}

/* C1: make C2 under the dumped PID, tell P its pidfd, be init. Returns in C2. */
static void start_init(const struct outer_fds *o, u32 pid)
{
	s32 tid = (s32)pid, pidfd = -1;
	struct clone_args clone = {
		.flags = CLONE_PIDFD,
		.pidfd = (u64)&pidfd,
		.exit_signal = SIGCHLD,
		.set_tid = (u64)&tid,
		.set_tid_size = 1,
	};
	long ret;

	sys_call2(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL); /* P killed: the namespace and the process go with it */
	ret = clone3(&clone);
	if (ret < 0)
		loader_fail("cannot create the process under its dumped PID in its namespace", ret, pid);
	if (ret == 0) {
		sys_call1(__NR_close, o->pipe[0]);
		sys_call1(__NR_close, o->pipe[1]);
		sys_call1(__NR_close, o->signals);
		return;
	}
	sys_call3(__NR_write, o->pipe[1], &pidfd, sizeof(pidfd));
	init_loop(pid, o->pipe[1]);
}

int enter_namespaces(const struct restorer_args *args, long *why)
{
	const struct restorer_thread *leader = (const struct restorer_thread *)args->threads;
	u32 uid = (u32)sys_call0(__NR_geteuid), gid = (u32)sys_call0(__NR_getegid);
	u64 received = ~(SIGMASK(SIGKILL) | SIGMASK(SIGSTOP));
	struct outer_fds o;
	struct clone_args clone = { .flags = CLONE_FILES, .exit_signal = SIGCHLD };
	long ret;

	if (leader->tid == 1) { /* pid 1 is the namespace's init, which the process cannot be */
		*why = -EINVAL;
		return 0;
	}
	ret = sys_call1(__NR_unshare, CLONE_NEWUSER | CLONE_NEWPID);
	*why = ret;
	if (ret == -EPERM || ret == -EINVAL || ret == -ENOSPC || ret == -EUSERS || ret == -ENOSYS)
		return 0;
	if (ret)
		loader_fail("cannot make the process's user and PID namespaces", ret, 0);
	map_id("/proc/self/uid_map", args->creds.uid, uid);
	ret = write_file("/proc/self/setgroups", "deny\n");
	if (ret)
		loader_fail("cannot write the new user namespace's setgroups", ret, 0);
	map_id("/proc/self/gid_map", args->creds.gid, gid);

	ret = sys_call2(__NR_pipe2, o.pipe, O_CLOEXEC | O_NONBLOCK);
	if (ret)
		loader_fail("cannot make a pipe", ret, 0);
	ret = sys_call4(__NR_signalfd4, -1, &received, KERNEL_SIGSET_SIZE, O_CLOEXEC);
	if (ret < 0)
		loader_fail("cannot make a signalfd", ret, 0);
	o.signals = (int)ret;
	ret = clone3(&clone);
	if (ret < 0)
		loader_fail("cannot create pid 1 of the process's namespace", ret, 0);
	if (ret > 0)
		outer_loop(&o, (s32)ret);
	start_init(&o, leader->tid);
	return 1;
}
