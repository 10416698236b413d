/* rseq target, normal case: per-CPU counters updated only at the commit of
 * a hand-written critical section that spends most of its time inside.
 *
 * The section: check that the CPU read before it is still current, spin
 * argv[1] iterations (default 1000000), check the CPU again, and commit the
 * per-CPU increment with one store. Any preemption, migration or signal
 * inside makes the kernel restart it at the abort handler, so the second
 * CPU check can only fail if the thread was resumed inside the section
 * after a migration without that abort: that is reported as a violation
 * and the target exits with status 3. After every commit the sum of the
 * per-CPU counters must equal the number of commits (status 4 otherwise).
 *
 * Prints "ready area=... sig=... cs=... start=... post_commit=... abort=...
 * commits=... aborts=..." (addresses in hex), then a "status ..." line about
 * every 100 ms. Run with GLIBC_TUNABLES=glibc.pthread.rseq=0.
 */
#include "rseq_target.h"

#include <time.h>

#define MAX_CPUS 64

struct slot {
	uint64_t count;
	char pad[56];
};

struct cs_desc {
	uint32_t version, flags;
	uint64_t start_ip, post_commit_offset, abort_ip;
};

extern const struct cs_desc counter_cs;

static struct target_rseq area;
static struct slot percpu[MAX_CPUS] __attribute__((aligned(64)));
static uint64_t commits, aborts;

enum outcome { COMMITTED, ABORTED, VIOLATED };

static enum outcome __attribute__((noinline)) increment(uint32_t cpu, uint64_t spins)
{
	__asm__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"counter_cs:\n\t"
		".long 0, 0\n\t"
		".quad 1f, 2f - 1f, 4f\n\t"
		".popsection\n\t"
		"leaq counter_cs(%%rip), %%rax\n\t"
		"movq %%rax, %[rseq_cs]\n\t"
		"1:\n\t"
		"cmpl %[cpu], %[cpu_id]\n\t"
		"jne 4f\n\t"
		"movq %[spins], %%rcx\n\t"
		"5:\n\t"
		"decq %%rcx\n\t"
		"jnz 5b\n\t"
		"cmpl %[cpu], %[cpu_id]\n\t"
		"jne %l[violated]\n\t"
		"movq (%[slot]), %%rax\n\t"
		"incq %%rax\n\t"
		"movq %%rax, (%[slot])\n\t"
		"2:\n\t"
		".pushsection .text.rseq_abort, \"ax\"\n\t"
		TARGET_RSEQ_SIGNATURE_BYTES
		"4:\n\t"
		"jmp %l[aborted]\n\t"
		".popsection\n\t"
		:
		: [rseq_cs] "m"(area.rseq_cs), [cpu_id] "m"(area.cpu_id), [cpu] "r"(cpu), [spins] "r"(spins),
		  [slot] "r"(&percpu[cpu].count), [sig] "i"(TARGET_RSEQ_SIG)
		: "rax", "rcx", "memory", "cc"
		: aborted, violated);
	return COMMITTED;
aborted:
	return ABORTED;
violated:
	return VIOLATED;
}

static uint64_t sum_counters(void)
{
	uint64_t sum = 0;
	for (int i = 0; i < MAX_CPUS; i++)
		sum += percpu[i].count;
	return sum;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	uint64_t spins = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000000;
	double next = 0;

	register_target_rseq(&area);
	printf("ready area=%p sig=%#x cs=%p start=%#lx post_commit=%#lx abort=%#lx commits=%p aborts=%p\n",
	       (void *)&area, TARGET_RSEQ_SIG, (void *)&counter_cs, counter_cs.start_ip,
	       counter_cs.post_commit_offset, counter_cs.abort_ip, (void *)&commits, (void *)&aborts);
	fflush(stdout);
	for (;;) {
		uint32_t cpu = __atomic_load_n(&area.cpu_id_start, __ATOMIC_RELAXED);
		if (cpu >= MAX_CPUS) {
			printf("VIOLATION cpu_id_start %u out of range\n", cpu);
			return 3;
		}
		switch (increment(cpu, spins)) {
		case COMMITTED:
			commits++;
			break;
		case ABORTED:
			aborts++;
			break;
		case VIOLATED:
			printf("VIOLATION resumed inside the section on cpu %u, entered on cpu %u\n", area.cpu_id, cpu);
			fflush(stdout);
			return 3;
		}
		if (sum_counters() != commits) {
			printf("VIOLATION per-cpu sum %lu != commits %lu\n", sum_counters(), commits);
			fflush(stdout);
			return 4;
		}
		if (now() >= next) {
			printf("status commits=%lu aborts=%lu sum=%lu\n", commits, aborts, sum_counters());
			fflush(stdout);
			next = now() + 0.1;
		}
	}
}
