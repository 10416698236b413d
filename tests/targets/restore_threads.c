/*
 * Restore target with eight worker threads, each with state of its own to
 * keep and its own way of waiting in the kernel.
 *
 * usage: restore_threads [SLEEP [nopipe]]
 *
 * Worker I (0..7) names itself "worker-I", sets its __thread value and errno
 * (1000+I), blocks SIGRTMIN+I (worker 1 SIGUSR2 too), installs a malloc'ed
 * sigaltstack of (64 + 4 * I) KiB and opens counter-I.txt. Each of its ticks
 * loads SIMD registers (xmm8, the upper halves of ymm9 and zmm10, zmm16-31,
 * all seeded by I and N), spins about a millisecond with no call, checks
 * errno first (nothing has run since it was set), then the registers, name,
 * __thread value, mask and altstack, prints "tick I N ok" or
 * "tick I N bad WHAT,..." (WHAT: errno simd name tls mask altstack) and
 * writes "N\n" to counter-I.txt, N from 0 without gaps.
 *
 * How they wait between ticks:
 *   0-3  nanosleep 20 ms.
 *   4    first a raw FUTEX_WAIT, no timeout, on wake_word; main sets it to 1
 *        and FUTEX_WAKEs it when a file "wake" appears: "woken 4 1", then
 *        ticks as 0-3.
 *   5    raw FUTEX_WAIT with a relative 50 ms timeout on a word that never
 *        changes; every return (ETIMEDOUT, EINTR, EAGAIN) is a tick.
 *   6    first prints "sleeper deadline_ns=D" (CLOCK_MONOTONIC now + SLEEP
 *        seconds, 3 by default), sleeps that long with a relative nanosleep
 *        resumed with its remainder on EINTR (as coreutils sleep does), then
 *        "slept late_ns=L" (monotonic now - D), then ticks as 0-3.
 *   7    first blocks in read() on a pipe; main writes "x" into it when a file
 *        "feed" appears: "read 7 x", then ticks as 0-3. With "nopipe" worker 7
 *        waits on a futex word main sets instead (for a runtime without pipe
 *        support) and prints the same line.
 * A file "unblock-I" makes worker I (once it ticks) delete it, unblock
 * everything it blocked and print "unblocked I"; its ticks then check the
 * empty mask.
 *
 * SIGUSR1, SIGUSR2 and SIGRTMIN+0..7 have SA_SIGINFO|SA_ONSTACK|SA_RESTART
 * handlers recording (signal, gettid()); main prints each as
 * "signal SIGNO tid=TID name=COMM" (the number, e.g. 36 for SIGRTMIN+2; COMM
 * from /proc/self/task/TID/comm). Main blocks SIGUSR2 and SIGRTMIN..SIGRTMIN+7,
 * so a process-directed SIGUSR2 goes to one of workers 0 and 2-7, and
 * SIGUSR1 (blocked nowhere) to main or any worker. A tgkill of SIGRTMIN+I to
 * worker I stays pending on that thread until "unblock-I".
 *
 * Main prints "ready pid=P tids=T0,...,T7" once every worker has set its
 * state up (the sleeper's deadline line comes before it), then polls for
 * "wake" and "feed" every 10 ms. Every line is one write(2) on fd 1, so lines
 * of different threads never mix.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "say.h"

#define WORKERS 8
#define SPINS 2000000L
#define RING_SIZE 64

struct worker {
	int index;
	pid_t tid;
	sigset_t mask;
	stack_t alt;
	int counter;
	unsigned long ticks;
};

static struct worker workers[WORKERS];
static __thread uint64_t tls_value;
static int set_up, sleep_seconds = 3, use_pipe = 1, feed_pipe[2];
static uint32_t wake_word, still_word, feed_word;
static struct {
	int sig, tid;
} ring[RING_SIZE];
static unsigned ring_head, ring_tail;

static uint64_t pattern(uint64_t i)
{
	return i * 0x9E3779B97F4A7C15ull ^ (i >> 7);
}

static uint64_t tls_expected(int index)
{
	return pattern(0x7157 + index);
}

static long futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
	struct timespec req = { ns / 1000000000, ns % 1000000000 }, rem;

	while (nanosleep(&req, &rem) && errno == EINTR)
		req = rem;
}

#define ZLOAD(reg, slot) "vmovdqu64 " #slot "*64(%[v]), %%zmm" #reg "\n\t"
#define ZSTORE(reg, slot) "vmovdqu64 %%zmm" #reg ", " #slot "*64(%[o])\n\t"

/*
 * zmm16-31 in slots 0-15, zmm10 in 16, ymm9 in 17, xmm8 in 18: loaded, held
 * across a spin with no call or syscall (where a dump finds a task that is
 * not sleeping), stored back and compared.
 */
static int spin_with_simd(uint64_t seed, long spins)
{
	uint64_t in[19][8], out[19][8];
	int r, i, ok = 1;

	for (r = 0; r < 19; r++)
		for (i = 0; i < 8; i++)
			in[r][i] = pattern(seed * 152 + r * 8 + i);
	memset(out, 0, sizeof(out));
	__asm__ volatile(
		ZLOAD(16, 0) ZLOAD(17, 1) ZLOAD(18, 2) ZLOAD(19, 3) ZLOAD(20, 4) ZLOAD(21, 5) ZLOAD(22, 6) ZLOAD(23, 7)
		ZLOAD(24, 8) ZLOAD(25, 9) ZLOAD(26, 10) ZLOAD(27, 11) ZLOAD(28, 12) ZLOAD(29, 13) ZLOAD(30, 14)
		ZLOAD(31, 15) ZLOAD(10, 16)
		"vmovdqu 17*64(%[v]), %%ymm9\n\t"
		"movdqu 18*64(%[v]), %%xmm8\n\t"
		"1: dec %[n]\n\t"
		"jnz 1b\n\t"
		ZSTORE(16, 0) ZSTORE(17, 1) ZSTORE(18, 2) ZSTORE(19, 3) ZSTORE(20, 4) ZSTORE(21, 5) ZSTORE(22, 6)
		ZSTORE(23, 7) ZSTORE(24, 8) ZSTORE(25, 9) ZSTORE(26, 10) ZSTORE(27, 11) ZSTORE(28, 12) ZSTORE(29, 13)
		ZSTORE(30, 14) ZSTORE(31, 15) ZSTORE(10, 16)
		"vmovdqu %%ymm9, 17*64(%[o])\n\t"
		"movdqu %%xmm8, 18*64(%[o])\n\t"
		"vzeroupper\n\t"
		: [n] "+r"(spins)
		: [v] "r"(in), [o] "r"(out)
		: "memory", "xmm8", "xmm9", "xmm10", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
		  "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
	for (r = 0; r < 19; r++) {
		int words = r == 18 ? 2 : r == 17 ? 4 : 8;

		for (i = 0; i < words; i++)
			ok &= out[r][i] == in[r][i];
	}
	return ok;
}

static int mask_is(const sigset_t *expected)
{
	sigset_t cur;
	int sig;

	if (pthread_sigmask(SIG_BLOCK, NULL, &cur))
		return 0;
	for (sig = 1; sig <= SIGRTMAX; sig++)
		if (sigismember(&cur, sig) != sigismember(expected, sig))
			return 0;
	return 1;
}

static int altstack_is(const stack_t *expected)
{
	stack_t cur;

	return sigaltstack(NULL, &cur) == 0 && cur.ss_sp == expected->ss_sp && cur.ss_size == expected->ss_size &&
	       cur.ss_flags == 0;
}

static void unblock_on_request(struct worker *w)
{
	char file[16];

	snprintf(file, sizeof(file), "unblock-%d", w->index);
	if (access(file, F_OK))
		return;
	unlink(file);
	sigemptyset(&w->mask);
	pthread_sigmask(SIG_SETMASK, &w->mask, NULL);
	say("unblocked %d\n", w->index);
}

static void tick(struct worker *w)
{
	int i = w->index, simd, errno_ok;
	char bad[64] = "", name[16], line[24];

	errno = 1000 + i;
	simd = spin_with_simd((uint64_t)i << 32 | w->ticks, SPINS);
	errno_ok = errno == 1000 + i;
	if (!errno_ok)
		strcat(bad, ",errno");
	if (!simd)
		strcat(bad, ",simd");
	snprintf(line, sizeof(line), "worker-%d", i);
	if (pthread_getname_np(pthread_self(), name, sizeof(name)) || strcmp(name, line))
		strcat(bad, ",name");
	if (tls_value != tls_expected(i))
		strcat(bad, ",tls");
	if (!mask_is(&w->mask))
		strcat(bad, ",mask");
	if (!altstack_is(&w->alt))
		strcat(bad, ",altstack");
	if (bad[0])
		say("tick %d %lu bad %s\n", i, w->ticks, bad + 1);
	else
		say("tick %d %lu ok\n", i, w->ticks);
	if (write(w->counter, line, snprintf(line, sizeof(line), "%lu\n", w->ticks)) < 0)
		_exit(1);
	w->ticks++;
	unblock_on_request(w);
}

static void tick_every_20ms(struct worker *w)
{
	for (;;) {
		tick(w);
		sleep_ns(20000000);
	}
}

static void set_up_thread(struct worker *w)
{
	int i = w->index;
	char file[16];

	w->tid = gettid();
	snprintf(file, sizeof(file), "worker-%d", i);
	pthread_setname_np(pthread_self(), file);
	tls_value = tls_expected(i);
	sigemptyset(&w->mask);
	sigaddset(&w->mask, SIGRTMIN + i);
	if (i == 1)
		sigaddset(&w->mask, SIGUSR2);
	pthread_sigmask(SIG_SETMASK, &w->mask, NULL);
	w->alt.ss_size = (64 + 4 * i) * 1024;
	w->alt.ss_sp = malloc(w->alt.ss_size);
	if (!w->alt.ss_sp || sigaltstack(&w->alt, NULL))
		_exit(1);
	snprintf(file, sizeof(file), "counter-%d.txt", i);
	w->counter = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (w->counter < 0)
		_exit(1);
	errno = 1000 + i;
}

static void wait_for_wake(void)
{
	while (__atomic_load_n(&wake_word, __ATOMIC_ACQUIRE) == 0)
		futex(&wake_word, FUTEX_WAIT, 0, NULL);
	say("woken 4 %u\n", __atomic_load_n(&wake_word, __ATOMIC_ACQUIRE));
}

static void tick_on_timed_futex(struct worker *w)
{
	for (;;) {
		struct timespec fifty_ms = { 0, 50000000 };

		futex(&still_word, FUTEX_WAIT, 0, &fifty_ms);
		tick(w);
	}
}

static void sleep_to_deadline(int64_t deadline)
{
	sleep_ns(deadline - monotonic_ns() > 0 ? deadline - monotonic_ns() : 0);
	say("slept late_ns=%lld\n", (long long)(monotonic_ns() - deadline));
}

static void read_feed(void)
{
	char c = 'x';
	ssize_t n;

	if (!use_pipe) {
		while (__atomic_load_n(&feed_word, __ATOMIC_ACQUIRE) == 0)
			futex(&feed_word, FUTEX_WAIT, 0, NULL);
	} else {
		while ((n = read(feed_pipe[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n != 1)
			_exit(1);
	}
	say("read 7 %c\n", c);
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	int64_t deadline = 0;

	set_up_thread(w);
	if (w->index == 6) {
		deadline = monotonic_ns() + (int64_t)sleep_seconds * 1000000000;
		say("sleeper deadline_ns=%lld\n", (long long)deadline);
	}
	__atomic_add_fetch(&set_up, 1, __ATOMIC_SEQ_CST);
	switch (w->index) {
	case 4:
		wait_for_wake();
		break;
	case 5:
		tick_on_timed_futex(w);
		break;
	case 6:
		sleep_to_deadline(deadline);
		break;
	case 7:
		read_feed();
		break;
	}
	tick_every_20ms(w);
	return NULL;
}

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
	int saved = errno;
	unsigned slot = __atomic_fetch_add(&ring_head, 1, __ATOMIC_RELAXED) % RING_SIZE;

	ring[slot].tid = gettid();
	__atomic_store_n(&ring[slot].sig, sig, __ATOMIC_RELEASE);
	errno = saved;
}

static void install_handlers(void)
{
	struct sigaction sa;
	int i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	for (i = 0; i < WORKERS; i++)
		sigaction(SIGRTMIN + i, &sa, NULL);
}

static void block_in_main(void)
{
	sigset_t set;
	int i;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	for (i = 0; i < WORKERS; i++)
		sigaddset(&set, SIGRTMIN + i);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
}

static void thread_name(int tid, char *name, size_t size)
{
	char path[48];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		n = read(fd, name, size - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(name, size, "?");
		return;
	}
	name[n] = 0;
	name[strcspn(name, "\n")] = 0;
}

static void print_signals(void)
{
	int sig;

	while ((sig = __atomic_load_n(&ring[ring_tail % RING_SIZE].sig, __ATOMIC_ACQUIRE)) != 0) {
		int tid = ring[ring_tail % RING_SIZE].tid;
		char name[32];

		__atomic_store_n(&ring[ring_tail % RING_SIZE].sig, 0, __ATOMIC_RELAXED);
		ring_tail++;
		thread_name(tid, name, sizeof(name));
		say("signal %d tid=%d name=%s\n", sig, tid, name);
	}
}

static int take_file(const char *name)
{
	return access(name, F_OK) == 0 && unlink(name) == 0;
}

static void print_ready(void)
{
	char tids[WORKERS * 12] = "";
	int i, len = 0;

	for (i = 0; i < WORKERS; i++)
		len += snprintf(tids + len, sizeof(tids) - len, "%s%d", i ? "," : "", workers[i].tid);
	say("ready pid=%d tids=%s\n", getpid(), tids);
}

int main(int argc, char **argv)
{
	pthread_t thread;
	int i;

	if (argc > 1)
		sleep_seconds = atoi(argv[1]);
	if (argc > 2 && strcmp(argv[2], "nopipe") == 0)
		use_pipe = 0;
	install_handlers();
	block_in_main();
	if (use_pipe && pipe(feed_pipe))
		return 1;
	for (i = 0; i < WORKERS; i++) {
		workers[i].index = i;
		if (pthread_create(&thread, NULL, run_worker, &workers[i]))
			return 1;
	}
	while (__atomic_load_n(&set_up, __ATOMIC_SEQ_CST) < WORKERS)
		sleep_ns(1000000);
	print_ready();
	for (;;) {
		sleep_ns(10000000);
		print_signals();
		if (take_file("wake")) {
			__atomic_store_n(&wake_word, 1, __ATOMIC_RELEASE);
			futex(&wake_word, FUTEX_WAKE, 1, NULL);
		}
		if (take_file("feed")) {
			if (!use_pipe) {
				__atomic_store_n(&feed_word, 1, __ATOMIC_RELEASE);
				futex(&feed_word, FUTEX_WAKE, 1, NULL);
			} else if (write(feed_pipe[1], "x", 1) != 1) {
				return 1;
			}
		}
	}
}
