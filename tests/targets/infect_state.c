/* Infection target: known state the parasite's commands must report, and a
 * main thread that checks its own registers continuously.
 *
 * State: SIGUSR1 handler (SA_SIGINFO | SA_RESTART | SA_ONSTACK, sa_mask
 * {SIGTERM}), SIGINT ignored; blocked SIGUSR2 and SIGRTMIN+3; a 64 KiB
 * sigaltstack; umask 027; RLIMIT_NOFILE soft 200; ITIMER_PROF interval 100 s,
 * value 1000 s; clear_child_tid set to &ctid; argv[1] (a file) opened O_RDWR
 * at fd 7 with "hello\n" written; argv[2] MiB of pages where byte k of page p
 * is (p * 7 + k) & 0xff (page p's first 8 bytes hold p instead).
 *
 * The main thread loads zmm0-31 (zmm_i byte k = i * 64 + k), k2-k7 and
 * r12-r15 with known values, then loops: check every one of them, count,
 * sleep 1 ms in a raw nanosleep. A mismatch prints CORRUPT and exits 3. A
 * reporter thread prints "tick N" with the loop count every 20 ms.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "held_registers.h"

static unsigned char vectors[32 * 64] __attribute__((aligned(64)));
static volatile uint64_t loops;
static int ctid;
static const struct timespec one_ms = {0, 1000000};

static void on_usr1(int sig, siginfo_t *info, void *ctx) { (void)sig; (void)info; (void)ctx; }

static void die(const char *what) { perror(what); exit(1); }


static void __attribute__((noreturn)) hold_registers(void)
{
	__asm__ volatile(
		LOAD_HELD
		"1:\n\t"
		CHECK_HELD
		"lock incq %[loops]\n\t"
		"mov $35, %%eax\n\t"
		"mov %[ts], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"jmp 1b\n\t"
		"9:\n\t"
		"mov $1, %%edi\n\t"
		"mov %[msg], %%rsi\n\t"
		"mov $8, %%edx\n\t"
		"mov $1, %%eax\n\t"
		"syscall\n\t"
		"mov $3, %%edi\n\t"
		"mov $231, %%eax\n\t"
		"syscall\n\t"
		: [loops] "+m"(loops)
		: [v] "r"(vectors), [ts] "r"(&one_ms), [msg] "r"("CORRUPT\n")
		: "rax", "rcx", "r11", "rdi", "rsi", "rdx", "r12", "r13", "r14", "r15", "memory");
	__builtin_unreachable();
}

static void *report(void *unused)
{
	(void)unused;
	for (;;) {
		printf("tick %llu\n", (unsigned long long)loops);
		fflush(stdout);
		usleep(20000);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) { fprintf(stderr, "usage: infect_state FILE MIB\n"); return 2; }
	for (int i = 0; i < (int)sizeof(vectors); i++) vectors[i] = (unsigned char)i;

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	if (sigaction(SIGUSR1, &sa, NULL)) die("sigaction");
	signal(SIGINT, SIG_IGN);

	stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL)) die("sigaltstack");
	umask(027);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 200;
	if (setrlimit(RLIMIT_NOFILE, &rl)) die("setrlimit");
	struct itimerval it = { .it_interval = {100, 0}, .it_value = {1000, 0} };
	if (setitimer(ITIMER_PROF, &it, NULL)) die("setitimer");
	syscall(SYS_set_tid_address, &ctid);

	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || dup2(fd, 7) != 7) die("open");
	close(fd);
	if (write(7, "hello\n", 6) != 6) die("write");

	size_t size = (size_t)atoi(argv[2]) << 20;
	unsigned char *pages = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pages == MAP_FAILED) die("mmap");
	for (size_t p = 0; p < size / 4096; p++) {
		unsigned char *page = pages + p * 4096;
		for (int k = 0; k < 4096; k++) page[k] = (unsigned char)(p * 7 + k);
		memcpy(page, &p, sizeof(p));
	}

	sigset_t blocked;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR2);
	sigaddset(&blocked, SIGRTMIN + 3);
	pthread_t reporter;
	if (pthread_create(&reporter, NULL, report, NULL)) die("pthread_create");
	if (sigprocmask(SIG_BLOCK, &blocked, NULL)) die("sigprocmask");

	printf("ready pid=%d pages=%p size=%zu altstack=%p ctid=%p sigrtmin=%d\n", getpid(), (void *)pages, size,
	       ss.ss_sp, (void *)&ctid, SIGRTMIN);
	fflush(stdout);
	hold_registers();
}
