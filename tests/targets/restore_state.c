/*
 * Restore target with known state: a counter printed with the real time and
 * CPU, SIMD registers held across long spins, a SIGUSR1 handler, a blocked
 * pending SIGUSR2, an open file written further, and optionally MiB of
 * patterned memory.
 *
 * usage: restore_state [MIB]
 * Prints "ready pid=..", then "tick N ns=REALTIME cpu=C simd=ok|bad"
 * forever. SIGUSR1 prints "usr1 N". A file "unblock" in the cwd unblocks
 * SIGUSR2 (pending since start): its handler prints "usr2 si_value=V".
 * A file "verify" makes it check the pattern: "verify ok|bad PAGES".
 * Every tick also appends "N\n" to data.txt (an fd opened at start).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1_count;
static volatile sig_atomic_t usr2_value = -1;

static void on_usr1(int sig)
{
	usr1_count++;
}

static void on_usr2(int sig, siginfo_t *info, void *ctx)
{
	usr2_value = info->si_value.sival_int;
}

static uint64_t pattern(uint64_t i)
{
	return i * 0x9E3779B97F4A7C15ull ^ (i >> 7);
}

/*
 * Loads known values into xmm8, the upper half of ymm9, the upper 256 bits
 * of zmm10 and zmm20 (AVX-512 only), spins without any call or syscall
 * (where the dump almost always finds the task), then stores them back.
 */
static int spin_with_simd(uint64_t seed, long spins)
{
	uint64_t in[8], out[4][8];
	int i, ok = 1;

	for (i = 0; i < 8; i++)
		in[i] = pattern(seed + i);
	__asm__ volatile(
		"vmovdqu64 (%[in]), %%zmm20\n\t"
		"vmovdqu64 (%[in]), %%zmm10\n\t"
		"vmovdqu (%[in]), %%ymm9\n\t"
		"movdqu (%[in]), %%xmm8\n\t"
		"1: dec %[n]\n\t"
		"jnz 1b\n\t"
		"movdqu %%xmm8, (%[o0])\n\t"
		"vmovdqu %%ymm9, (%[o1])\n\t"
		"vmovdqu64 %%zmm10, (%[o2])\n\t"
		"vmovdqu64 %%zmm20, (%[o3])\n\t"
		"vzeroupper\n\t"
		: [n] "+r"(spins)
		: [in] "r"(in), [o0] "r"(out[0]), [o1] "r"(out[1]), [o2] "r"(out[2]), [o3] "r"(out[3])
		: "memory", "xmm8", "xmm9", "xmm10", "xmm20");
	for (i = 0; i < 8; i++) {
		if ((i < 2 && out[0][i] != in[i]) || (i < 4 && out[1][i] != in[i]) || out[2][i] != in[i] ||
		    out[3][i] != in[i])
			ok = 0;
	}
	return ok;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
	size_t words = mib << 17, i;
	uint64_t *mem = NULL;
	struct sigaction sa;
	sigset_t block;
	union sigval value = { .sival_int = 4242 };
	unsigned long tick = 0, printed_usr1 = 0;
	int data, unblocked = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (words) {
		mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED)
			return 1;
		for (i = 0; i < words; i++)
			mem[i] = pattern(i);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_sigaction = on_usr2;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGUSR2, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigqueue(getpid(), SIGUSR2, value);
	data = open("data.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (data < 0)
		return 1;
	printf("ready pid=%d\n", getpid());
	for (;;) {
		struct timespec ts;
		int simd = spin_with_simd(tick, 20000000);
		char line[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		printf("tick %lu ns=%lld cpu=%d simd=%s\n", tick, (long long)ts.tv_sec * 1000000000 + ts.tv_nsec,
		       sched_getcpu(), simd ? "ok" : "bad");
		if (write(data, line, snprintf(line, sizeof(line), "%lu\n", tick)) < 0)
			return 1;
		tick++;
		if (usr1_count != printed_usr1) {
			printed_usr1 = usr1_count;
			printf("usr1 %lu\n", printed_usr1);
		}
		if (!unblocked && access("unblock", F_OK) == 0) {
			unblocked = 1;
			sigprocmask(SIG_UNBLOCK, &block, NULL);
			printf("usr2 si_value=%d\n", (int)usr2_value);
		}
		if (mem && access("verify", F_OK) == 0) {
			size_t bad = 0;

			for (i = 0; i < words; i++)
				bad += mem[i] != pattern(i);
			printf("verify %s %zu\n", bad ? "bad" : "ok", bad);
			unlink("verify");
		}
	}
}
