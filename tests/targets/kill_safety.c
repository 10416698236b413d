/* Kill-safety target: one thread that checks its own registers and signal
 * mask continuously, and that the dump accepts (single-threaded, stdio and
 * fds on regular files or /dev/null).
 *
 * State: SIGUSR2 and SIGRTMIN+3 blocked; argv[1] (a file) opened O_RDWR at
 * fd 7 with "hello\n" written. The thread loads zmm0-31 (zmm_i byte k =
 * i * 64 + k), k2-k7, rbx and r12-r15 with known values, then loops: check
 * every one of them and the signal mask (rt_sigprocmask), count, print
 * "tick" every 16 rounds, sleep 1 ms in a raw nanosleep (so a dump mostly
 * finds it inside a syscall it must restart). A mismatch prints CORRUPT and
 * exits 3. Registers are never touched by C code after the load, so a
 * change by anyone else shows.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned char vectors[32 * 64] __attribute__((aligned(64)));
static volatile uint64_t loops;
static uint64_t expected_mask;
static uint64_t current_mask;
static const struct timespec one_ms = {0, 1000000};
static const char tick_text[] = "tick\n";
static const char corrupt_text[] = "CORRUPT\n";

static void die(const char *what) { perror(what); exit(1); }

#define LOAD(n) "vmovdqu64 " #n "*64(%[v]), %%zmm" #n "\n\t"
#define CHECK(n) "vpcmpeqq " #n "*64(%[v]), %%zmm" #n ", %%k1\n\t" \
	"kmovb %%k1, %%eax\n\tcmp $0xff, %%eax\n\tjne 9f\n\t"
#define KLOAD(n) "mov $0x" #n #n #n #n "abcd" #n #n #n #n ", %%rax\n\tkmovq %%rax, %%k" #n "\n\t"
#define KCHECK(n) "kmovq %%k" #n ", %%rax\n\tmov $0x" #n #n #n #n "abcd" #n #n #n #n ", %%rcx\n\t" \
	"cmp %%rcx, %%rax\n\tjne 9f\n\t"
#define GLOAD(r, v) "mov $" v ", %%" r "\n\t"
#define GCHECK(r, v) "mov $" v ", %%rax\n\tcmp %%rax, %%" r "\n\tjne 9f\n\t"

static void __attribute__((noreturn)) hold_registers(void)
{
	__asm__ volatile(
		LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5) LOAD(6) LOAD(7)
		LOAD(8) LOAD(9) LOAD(10) LOAD(11) LOAD(12) LOAD(13) LOAD(14) LOAD(15)
		LOAD(16) LOAD(17) LOAD(18) LOAD(19) LOAD(20) LOAD(21) LOAD(22) LOAD(23)
		LOAD(24) LOAD(25) LOAD(26) LOAD(27) LOAD(28) LOAD(29) LOAD(30) LOAD(31)
		KLOAD(2) KLOAD(3) KLOAD(4) KLOAD(5) KLOAD(6) KLOAD(7)
		GLOAD("rbx", "0x0b0b0b0b0b0b0b0b")
		GLOAD("r12", "0x1212121212121212") GLOAD("r13", "0x1313131313131313")
		GLOAD("r14", "0x1414141414141414") GLOAD("r15", "0x1515151515151515")
		"1:\n\t"
		CHECK(0) CHECK(1) CHECK(2) CHECK(3) CHECK(4) CHECK(5) CHECK(6) CHECK(7)
		CHECK(8) CHECK(9) CHECK(10) CHECK(11) CHECK(12) CHECK(13) CHECK(14) CHECK(15)
		CHECK(16) CHECK(17) CHECK(18) CHECK(19) CHECK(20) CHECK(21) CHECK(22) CHECK(23)
		CHECK(24) CHECK(25) CHECK(26) CHECK(27) CHECK(28) CHECK(29) CHECK(30) CHECK(31)
		KCHECK(2) KCHECK(3) KCHECK(4) KCHECK(5) KCHECK(6) KCHECK(7)
		GCHECK("rbx", "0x0b0b0b0b0b0b0b0b")
		GCHECK("r12", "0x1212121212121212") GCHECK("r13", "0x1313131313131313")
		GCHECK("r14", "0x1414141414141414") GCHECK("r15", "0x1515151515151515")
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

int main(int argc, char **argv)
{
	if (argc != 2) { fprintf(stderr, "usage: kill_safety FILE\n"); return 2; }
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

	printf("ready pid=%d mask=%llx\n", getpid(), (unsigned long long)expected_mask);
	fflush(stdout);
	hold_registers();
}
