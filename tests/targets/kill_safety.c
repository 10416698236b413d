/* Kill-safety target: threads (one, or argv[2]) that each check their own
 * registers and signal mask continuously, and that the dump accepts (stdio
 * and fds on regular files or /dev/null).
 *
 * State: SIGUSR2 and SIGRTMIN+3 blocked; argv[1] (a file) opened O_RDWR at
 * fd 7 with "hello\n" written. The thread loads zmm0-31 (zmm_i byte k =
 * i * 64 + k), k2-k7, rbx and r12-r15 with known values, then loops: check
 * every one of them and the signal mask (rt_sigprocmask), count, print
 * "tick" every 16 rounds, sleep 1 ms in a raw nanosleep (so a dump mostly
 * finds it inside a syscall it must restart). A mismatch prints CORRUPT and
 * exits 3. Registers are never touched by C code after the load, so a
 * change by anyone else shows. With THREADS, every thread (the main one
 * too) runs that loop with the same values and mask, counting in the same
 * counter; "ready" comes once all of them run.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "held_registers.h"

static unsigned char vectors[32 * 64] __attribute__((aligned(64)));
static volatile uint64_t loops;
static uint64_t expected_mask;
static uint64_t current_mask;
static const struct timespec one_ms = {0, 1000000};
static const char tick_text[] = "tick\n";
static const char corrupt_text[] = "CORRUPT\n";

static void die(const char *what) { perror(what); exit(1); }


static void __attribute__((noreturn)) hold_registers(void)
{
	__asm__ volatile(
		LOAD_HELD
		GLOAD("rbx", "0x0b0b0b0b0b0b0b0b")
		"1:\n\t"
		CHECK_HELD
		GCHECK("rbx", "0x0b0b0b0b0b0b0b0b")
		/* rt_sigprocmask(SIG_BLOCK, NULL, &current_mask, 8): the mask as the kernel has it */
		"mov $14, %%eax\n\t"
		"xor %%edi, %%edi\n\t"
		"xor %%esi, %%esi\n\t"
		"lea %[cur], %%rdx\n\t"
		"mov $8, %%r10d\n\t"
		"syscall\n\t"
		"mov %[cur], %%rax\n\t"
		"cmp %[exp], %%rax\n\t"
		"jne 9f\n\t"
		"lock incq %[loops]\n\t"
		"testq $15, %[loops]\n\t"
		"jnz 2f\n\t"
		"mov $1, %%eax\n\t"
		"mov $1, %%edi\n\t"
		"lea %[tick], %%rsi\n\t"
		"mov $5, %%edx\n\t"
		"syscall\n\t"
		"2:\n\t"
		"mov $35, %%eax\n\t"
		"lea %[ts], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"jmp 1b\n\t"
		"9:\n\t"
		"mov $1, %%edi\n\t"
		"lea %[msg], %%rsi\n\t"
		"mov $8, %%edx\n\t"
		"mov $1, %%eax\n\t"
		"syscall\n\t"
		"mov $3, %%edi\n\t"
		"mov $231, %%eax\n\t"
		"syscall\n\t"
		: [loops] "+m"(loops), [cur] "+m"(current_mask)
		: [v] "r"(vectors), [ts] "m"(one_ms), [msg] "m"(corrupt_text), [tick] "m"(tick_text),
		  [exp] "m"(expected_mask)
		: "rax", "rbx", "rcx", "r10", "r11", "rdi", "rsi", "rdx", "r12", "r13", "r14", "r15", "memory");
	__builtin_unreachable();
}

static volatile int started;

static void *hold_in_thread(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	hold_registers();
}

int main(int argc, char **argv)
{
	int threads = argc > 2 ? atoi(argv[2]) : 1;
	pthread_t thread;

	if (argc < 2 || argc > 3 || threads < 1) { fprintf(stderr, "usage: kill_safety FILE [THREADS]\n"); return 2; }
	for (int i = 0; i < (int)sizeof(vectors); i++) vectors[i] = (unsigned char)i;

	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || dup2(fd, 7) != 7) die("open");
	close(fd);
	if (write(7, "hello\n", 6) != 6) die("write");

	sigset_t blocked;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR2);
	sigaddset(&blocked, SIGRTMIN + 3);
	if (sigprocmask(SIG_BLOCK, &blocked, NULL)) die("sigprocmask");
	expected_mask = (1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGRTMIN + 3 - 1));
	for (int i = 1; i < threads; i++)
		if (pthread_create(&thread, NULL, hold_in_thread, NULL)) die("pthread_create");
	while (started != threads - 1)
		usleep(1000);

	printf("ready pid=%d mask=%llx\n", getpid(), (unsigned long long)expected_mask);
	fflush(stdout);
	hold_registers();
}
