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
 * commits=... aborts=..." (addresses in hex, of the main thread's), then a
 * "status ..." line about every 100 ms. Run with GLIBC_TUNABLES=glibc.pthread.rseq=0.
 *
 * With argv[2] = N, N threads (the main one among them) run the same loop,
 * each with its own rseq area, per-CPU counters and checks; the status line
 * adds min_commits, the fewest commits of any thread.
 */
#include "rseq_target.h"

#include <pthread.h>
#include <time.h>

#define MAX_CPUS 64
#define MAX_THREADS 16

struct slot {
	uint64_t count;
	char pad[56];
};

struct cs_desc {
	uint32_t version, flags;
	uint64_t start_ip, post_commit_offset, abort_ip;
};

extern const struct cs_desc counter_cs;

/* One thread's counter: its own area, per-CPU slots and tallies. */
struct counter {
	struct target_rseq area;
	struct slot percpu[MAX_CPUS] __attribute__((aligned(64)));
	uint64_t commits, aborts;
};

static struct counter counters[MAX_THREADS];
static int nr_threads = 1;
static uint64_t spins = 1000000;

enum outcome { COMMITTED, ABORTED, VIOLATED };

static enum outcome __attribute__((noinline)) increment(struct counter *c, uint32_t cpu)
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
		: [rseq_cs] "m"(c->area.rseq_cs), [cpu_id] "m"(c->area.cpu_id), [cpu] "r"(cpu), [spins] "r"(spins),
		  [slot] "r"(&c->percpu[cpu].count), [sig] "i"(TARGET_RSEQ_SIG)
		: "rax", "rcx", "memory", "cc"
		: aborted, violated);
	return COMMITTED;
aborted:
	return ABORTED;
violated:
	return VIOLATED;
}

static uint64_t sum_counters(const struct counter *c)
{
	uint64_t sum = 0;
	for (int i = 0; i < MAX_CPUS; i++)
		sum += c->percpu[i].count;
	return sum;
}

static uint64_t min_commits(void)
{
	uint64_t least = UINT64_MAX;
	for (int i = 0; i < nr_threads; i++) {
		uint64_t n = __atomic_load_n(&counters[i].commits, __ATOMIC_RELAXED);
		least = n < least ? n : least;
	}
	return least;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The loop every thread runs; only the main thread prints its status. */
static int run(struct counter *c, int main_thread)
{
	double next = 0;

	for (;;) {
		uint32_t cpu = __atomic_load_n(&c->area.cpu_id_start, __ATOMIC_RELAXED);
		if (cpu >= MAX_CPUS) {
			printf("VIOLATION cpu_id_start %u out of range\n", cpu);
			fflush(stdout);
			return 3;
		}
		switch (increment(c, cpu)) {
		case COMMITTED:
			__atomic_store_n(&c->commits, c->commits + 1, __ATOMIC_RELAXED);
			break;
		case ABORTED:
			c->aborts++;
			break;
		case VIOLATED:
			printf("VIOLATION resumed inside the section on cpu %u, entered on cpu %u\n", c->area.cpu_id, cpu);
			fflush(stdout);
			return 3;
		}
		if (sum_counters(c) != c->commits) {
			printf("VIOLATION per-cpu sum %lu != commits %lu\n", sum_counters(c), c->commits);
			fflush(stdout);
			return 4;
		}
		if (main_thread && now() >= next) {
			printf("status commits=%lu aborts=%lu sum=%lu min_commits=%lu\n", c->commits, c->aborts,
			       sum_counters(c), min_commits());
			fflush(stdout);
			next = now() + 0.1;
		}
	}
}

static void *thread_main(void *arg)
{
	struct counter *c = arg;

	register_target_rseq(&c->area);
	exit(run(c, 0));
}

int main(int argc, char **argv)
{
	struct counter *c = &counters[0];
	pthread_t thread;

	spins = argc > 1 ? strtoull(argv[1], NULL, 0) : spins;
	nr_threads = argc > 2 ? atoi(argv[2]) : 1;
	if (nr_threads < 1 || nr_threads > MAX_THREADS) {
		fprintf(stderr, "usage: rseq_counter [SPINS [THREADS <= %d]]\n", MAX_THREADS);
		return 2;
	}
	register_target_rseq(&c->area);
	for (int i = 1; i < nr_threads; i++)
		if (pthread_create(&thread, NULL, thread_main, &counters[i]))
			return 2;
	printf("ready area=%p sig=%#x cs=%p start=%#lx post_commit=%#lx abort=%#lx commits=%p aborts=%p\n",
	       (void *)&c->area, TARGET_RSEQ_SIG, (void *)&counter_cs, counter_cs.start_ip,
	       counter_cs.post_commit_offset, counter_cs.abort_ip, (void *)&c->commits, (void *)&c->aborts);
	fflush(stdout);
	return run(c, 1);
}
