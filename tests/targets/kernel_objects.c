/*
 * One process holding one of each kernel object behind an fd or a mapping, in a state worth keeping:
 *   an eventfd whose counter is 7; an epoll watching it (data 0xe1), a timerfd (0xe2), a signalfd (0xe3) and
 *   an inotify fd (0xe4), itself watched by a second epoll (data 0xe0); a timerfd firing every 10 ms, never read; a signalfd for SIGUSR1 (blocked); an
 *   inotify watch on the directory "watched" for IN_CREATE; a memfd of 64 KiB of pattern sealed against
 *   growing and shrinking, also mapped shared; a file "ghost" written and deleted, still open; a POSIX timer
 *   signalling SIGRTMIN+3 with value 0x51 every 20 ms; a SysV segment of key argv[1] (decimal) with pattern,
 *   attached; an exclusive flock on the file "locked"; a page of pattern made PROT_NONE.
 * Prints "ready pid=.. shmid=.. timer=..", then sleeps until SIGUSR2. Then it checks each object as a program
 * would use it, printing "check NAME ok" or "check NAME FAIL WHY" for each, and "done". The test sends
 * SIGUSR1 (for the signalfd) and creates watched/created-after (for inotify) before SIGUSR2.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

#define MEMFD_SIZE (64 * 1024)
#define SHM_SIZE (128 * 1024)
#define GHOST "ghost data, deleted but open"

static volatile sig_atomic_t go, timer_good, timer_bad;
static timer_t timer;

static void on_go(int sig)
{
	(void)sig;
	go = 1;
}

static void on_timer(int sig, siginfo_t *info, void *uc)
{
	(void)sig, (void)uc;
	if (info->si_code == SI_TIMER && info->si_value.sival_int == 0x51 && info->si_timerid == (int)(intptr_t)timer)
		timer_good++;
	else
		timer_bad++;
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + 3);
}

static int patterned(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != pattern(i))
			return 0;
	return 1;
}

static void fill(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(i);
}

static void check(const char *name, int ok, const char *why)
{
	if (ok)
		say("check %s ok\n", name);
	else
		say("check %s FAIL %s\n", name, why);
}

static int add(int epfd, int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv)
{
	struct sigaction go_action = { .sa_handler = on_go };
	struct sigaction timer_action = { .sa_sigaction = on_timer, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct sigevent timer_event = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 3 };
	struct itimerspec every_10ms = { { 0, 10000000 }, { 0, 10000000 } };
	struct itimerspec every_20ms = { { 0, 20000000 }, { 0, 20000000 } };
	sigset_t usr1, wait_mask;
	unsigned char *memfd_map, *segment, *hidden;
	int efd, tfd, sfd, ifd, epfd, outer, mfd, ghost, locked, shmid;

	if (argc != 2)
		return 2;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigaddset(&usr1, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	sigdelset(&usr1, SIGUSR2);
	timer_event.sigev_value.sival_int = 0x51;
	mkdir("watched", 0700);

	efd = eventfd(0, EFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
	ifd = inotify_init1(IN_NONBLOCK);
	epfd = epoll_create1(0);
	outer = epoll_create1(0);
	mfd = memfd_create("objects", MFD_ALLOW_SEALING);
	ghost = open("ghost", O_RDWR | O_CREAT | O_TRUNC, 0640);
	locked = open("locked", O_RDWR | O_CREAT, 0600);
	shmid = shmget((key_t)atol(argv[1]), SHM_SIZE, IPC_CREAT | IPC_EXCL | 0600);
	hidden = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (efd < 0 || tfd < 0 || sfd < 0 || ifd < 0 || epfd < 0 || outer < 0 || mfd < 0 || ghost < 0 || locked < 0 || shmid < 0 ||
	    hidden == MAP_FAILED) {
		perror("objects");
		return 1;
	}
	segment = shmat(shmid, NULL, 0);
	memfd_map = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (segment == (void *)-1 || memfd_map == MAP_FAILED || ftruncate(mfd, MEMFD_SIZE))
		return 1;
	fill(memfd_map, MEMFD_SIZE);
	fill(segment, SHM_SIZE);
	fill(hidden, 4096);
	if (eventfd_write(efd, 7) || timerfd_settime(tfd, 0, &every_10ms, NULL) ||
	    inotify_add_watch(ifd, "watched", IN_CREATE) < 0 || add(epfd, efd, 0xe1) || add(epfd, tfd, 0xe2) ||
	    add(epfd, sfd, 0xe3) || add(epfd, ifd, 0xe4) || add(outer, epfd, 0xe0) ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) ||
	    write(ghost, GHOST, sizeof(GHOST)) != sizeof(GHOST) || unlink("ghost") ||
	    flock(locked, LOCK_EX) || mprotect(hidden, 4096, PROT_NONE) ||
	    sigaction(SIGUSR2, &go_action, NULL) || sigaction(SIGRTMIN + 3, &timer_action, NULL) ||
	    timer_create(CLOCK_MONOTONIC, &timer_event, &timer) || timer_settime(timer, 0, &every_20ms, NULL)) {
		perror("setup");
		return 1;
	}
	say("ready pid=%d shmid=%d timer=%d\n", getpid(), shmid, (int)(intptr_t)timer);
	sigemptyset(&wait_mask); /* SIGUSR1 stays blocked while waiting: it is the signalfd's */
	sigaddset(&wait_mask, SIGUSR1);
	while (!go)
		sigsuspend(&wait_mask);

	{
		struct epoll_event ready[1];

		check("nested_epoll", epoll_wait(outer, ready, 1, 0) == 1 && ready[0].data.u64 == 0xe0,
		      "the outer epoll does not report the inner one ready");
	}
	{
		struct epoll_event ready[8];
		int n = epoll_wait(epfd, ready, 8, 0), seen = 0;

		for (int i = 0; i < n; i++)
			if (ready[i].events & EPOLLIN && ready[i].data.u64 >= 0xe1 && ready[i].data.u64 <= 0xe4)
				seen |= 1 << (ready[i].data.u64 - 0xe1);
		check("epoll", seen == 0xf, "not every watched fd was ready with its data");
	}
	{
		eventfd_t value = 0;

		check("eventfd", !eventfd_read(efd, &value) && value == 7, "counter is not 7");
	}
	{
		uint64_t ticks = 0, more = 0;
		int first = read(tfd, &ticks, sizeof(ticks)) == sizeof(ticks) && ticks >= 1;
		int flags = fcntl(tfd, F_GETFL);

		fcntl(tfd, F_SETFL, flags & ~O_NONBLOCK);
		check("timerfd", first && read(tfd, &more, sizeof(more)) == sizeof(more) && more >= 1,
		      "no pending expirations, or it stopped firing");
	}
	{
		struct signalfd_siginfo info;

		check("signalfd", read(sfd, &info, sizeof(info)) == sizeof(info) && info.ssi_signo == SIGUSR1,
		      "SIGUSR1 not read");
	}
	{
		char buf[4096] __attribute__((aligned(8)));
		ssize_t n = read(ifd, buf, sizeof(buf));
		const struct inotify_event *ev = (const struct inotify_event *)buf;

		check("inotify", n > 0 && (ev->mask & IN_CREATE) && ev->len && !strcmp(ev->name, "created-after"),
		      "no IN_CREATE for created-after");
	}
	{
		char x = 'X';
		int seals = fcntl(mfd, F_GET_SEALS);
		struct stat st;

		check("memfd", patterned(memfd_map, 100) && !fstat(mfd, &st) && st.st_size == MEMFD_SIZE &&
		      seals == (F_SEAL_GROW | F_SEAL_SHRINK) && pwrite(mfd, &x, 1, 100) == 1 && memfd_map[100] == 'X',
		      "contents, size, seals, or the mapping not showing a write through the fd");
	}
	{
		char buf[sizeof(GHOST)] = { 0 };
		struct stat st;

		check("deleted", pread(ghost, buf, sizeof(buf), 0) == sizeof(GHOST) && !strcmp(buf, GHOST) &&
		      !fstat(ghost, &st) && st.st_nlink == 0 && (st.st_mode & 0777) == 0640,
		      "contents, link count or mode");
	}
	{
		int before = timer_good;
		struct timespec wait = { 0, 100000000 };

		while (nanosleep(&wait, &wait))
			;
		check("posix_timer", timer_good > before && !timer_bad, "no signal, or one with the wrong value or id");
	}
	{
		struct shmid_ds ds;

		check("sysv", shmget((key_t)atol(argv[1]), 0, 0) == shmid && !shmctl(shmid, IPC_STAT, &ds) &&
		      ds.shm_segsz == SHM_SIZE && patterned(segment, SHM_SIZE), "id, size or contents");
	}
	{
		check("prot_none", !mprotect(hidden, 4096, PROT_READ) && patterned(hidden, 4096), "its data");
	}
	say("done\n");
	for (;;)
		pause();
}
