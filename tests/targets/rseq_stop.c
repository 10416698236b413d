/* rseq target, NO_RESTART case: stops itself with SIGSTOP from inside a
 * critical section that asks not to be restarted on signals.
 *
 * argv[1] says where RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL is set: "cs" in the
 * section's descriptor, "area" in the per-thread struct rseq flags (the
 * older interface). The section sends SIGSTOP to its own thread with a raw
 * tgkill, so the thread is group-stopped with its IP inside the section,
 * right after the syscall instruction, and rseq_cs pointing at the
 * descriptor. If it is ever continued and the kernel honours the flag
 * (Linux < 6.0), it commits, prints "committed" and exits 0; Linux 6.0 and
 * later kill it with SIGSEGV instead.
 *
 * Prints "ready area=... sig=... cs=... start=... post_commit=... abort=...
 * stop_ip=..." before it enters the section. Run with
 * GLIBC_TUNABLES=glibc.pthread.rseq=0.
 */
#include "rseq_target.h"

#include <linux/rseq.h>
#include <signal.h>
#include <string.h>

struct cs_desc {
	uint32_t version, flags;
	uint64_t start_ip, post_commit_offset, abort_ip;
};

extern struct cs_desc stop_cs;
extern const char stop_ip[];

static struct target_rseq area;
static uint64_t counter;

static int __attribute__((noinline)) stop_inside(int pid, int tid)
{
	__asm__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"stop_cs:\n\t"
		".long 0, 0\n\t"
		".quad 1f, 2f - 1f, 4f\n\t"
		".popsection\n\t"
		"leaq stop_cs(%%rip), %%rax\n\t"
		"movq %%rax, %[rseq_cs]\n\t"
		"1:\n\t"
		"movl %[nr], %%eax\n\t"
		"syscall\n\t"
		"stop_ip:\n\t"
		"movq %[counter], %%rax\n\t"
		"incq %%rax\n\t"
		"movq %%rax, %[counter]\n\t"
		"2:\n\t"
		".pushsection .text.rseq_abort, \"ax\"\n\t"
		TARGET_RSEQ_SIGNATURE_BYTES
		"4:\n\t"
		"jmp %l[aborted]\n\t"
		".popsection\n\t"
		:
		: [rseq_cs] "m"(area.rseq_cs), [counter] "m"(counter), [nr] "i"(SYS_tgkill),
		  "D"(pid), "S"(tid), "d"(SIGSTOP), [sig] "i"(TARGET_RSEQ_SIG)
		: "rax", "rcx", "r11", "memory", "cc"
		: aborted);
	return 0;
aborted:
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "cs") && strcmp(argv[1], "area"))) {
		fprintf(stderr, "usage: %s cs|area\n", argv[0]);
		return 2;
	}
	register_target_rseq(&area);
	if (!strcmp(argv[1], "cs"))
		stop_cs.flags = RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL;
	else
		area.flags = RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL;
	printf("ready area=%p sig=%#x cs=%p start=%#lx post_commit=%#lx abort=%#lx stop_ip=%p\n",
	       (void *)&area, TARGET_RSEQ_SIG, (void *)&stop_cs, stop_cs.start_ip,
	       stop_cs.post_commit_offset, stop_cs.abort_ip, (void *)stop_ip);
	fflush(stdout);
	if (stop_inside(getpid(), gettid())) {
		printf("aborted\n");
		return 1;
	}
	printf("committed %lu\n", counter);
	return 0;
}
