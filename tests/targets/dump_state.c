/* Dump target: known signal, file, resource and vector-register state.
 *
 * SIGUSR1: handler with SA_SIGINFO | SA_ONSTACK | SA_RESTART, sa_mask {SIGTERM}.
 * Blocked: SIGUSR2 (one pending for the thread, by raise) and SIGRTMIN+2
 * (one pending for the process, by sigqueue with value 1234).
 * sigaltstack of 64 KiB; umask 027; RLIMIT_NOFILE soft 200; ITIMER_VIRTUAL
 * 100 s (counts only user CPU time, so it never fires while sleeping).
 * argv[1] opened O_RDWR, "hello world\n" written (offset 12); /dev/null
 * opened O_WRONLY at fd 7.
 * Prints "ready key=value ..." (with the standard-format xsave offsets of the
 * AVX, ZMM_Hi256 and Hi16_ZMM components from CPUID leaf 0xd), then loads zmm0-31 (zmm_i byte k = i * 64 + k)
 * and sleeps in a raw nanosleep loop that touches no vector register.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static unsigned char vectors[32 * 64] __attribute__((aligned(64)));
static const struct timespec tick = {1, 0};

static void on_usr1(int sig, siginfo_t *info, void *ctx) { (void)sig; (void)info; (void)ctx; }

static unsigned xsave_offset(unsigned component) {
	unsigned eax, ebx, ecx, edx;
	__cpuid_count(0xd, component, eax, ebx, ecx, edx);
	return ebx;
}

static void die(const char *what) { perror(what); exit(1); }

#define LOAD(n) "vmovdqu64 " #n "*64(%0), %%zmm" #n "\n\t"

static void __attribute__((noreturn)) hold_vectors_and_sleep(void) {
	__asm__ volatile(
		LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5) LOAD(6) LOAD(7)
		LOAD(8) LOAD(9) LOAD(10) LOAD(11) LOAD(12) LOAD(13) LOAD(14) LOAD(15)
		LOAD(16) LOAD(17) LOAD(18) LOAD(19) LOAD(20) LOAD(21) LOAD(22) LOAD(23)
		LOAD(24) LOAD(25) LOAD(26) LOAD(27) LOAD(28) LOAD(29) LOAD(30) LOAD(31)
		"1: mov $35, %%eax\n\t"
		"mov %1, %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"jmp 1b\n\t"
		: : "r"(vectors), "r"(&tick) : "rax", "rcx", "r11", "rdi", "rsi", "memory");
	__builtin_unreachable();
}

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: dump_state FILE\n"); return 2; }
	for (int i = 0; i < (int)sizeof(vectors); i++) vectors[i] = (unsigned char)i;

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	if (sigaction(SIGUSR1, &sa, NULL)) die("sigaction");

	static char altstack[65536];
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
	if (sigaltstack(&ss, NULL)) die("sigaltstack");

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGRTMIN + 2);
	if (sigprocmask(SIG_BLOCK, &block, NULL)) die("sigprocmask");
	raise(SIGUSR2);
	if (sigqueue(getpid(), SIGRTMIN + 2, (union sigval){.sival_int = 1234})) die("sigqueue");

	umask(027);
	struct rlimit nofile;
	getrlimit(RLIMIT_NOFILE, &nofile);
	nofile.rlim_cur = 200;
	if (setrlimit(RLIMIT_NOFILE, &nofile)) die("setrlimit");
	struct itimerval timer = {.it_interval = {100, 0}, .it_value = {100, 0}};
	if (setitimer(ITIMER_VIRTUAL, &timer, NULL)) die("setitimer");

	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (fd < 0) die("open");
	if (write(fd, "hello world\n", 12) != 12) die("write");
	int null = open("/dev/null", O_WRONLY);
	if (null < 0 || dup2(null, 7) != 7) die("dup2");
	close(null);

	printf("ready handler=%p altstack=%p altstack_size=%zu file_fd=%d sigrtmin=%d "
	       "ymm_hi128=%u zmm_hi256=%u hi16_zmm=%u\n",
	       (void *)on_usr1, (void *)altstack, sizeof(altstack), fd, SIGRTMIN,
	       xsave_offset(2), xsave_offset(6), xsave_offset(7));
	fflush(stdout);
	hold_vectors_and_sleep();
}
