/* rseq target, ordinary glibc program: glibc registers its own rseq area and
 * sched_getcpu() reads it.
 *
 * Prints "ready area=... size=... sig=..." (glibc's area, from the thread
 * pointer and __rseq_offset), then calls sched_getcpu() every 5 ms and
 * prints "cpu N" whenever the answer changes; a negative answer (rseq not
 * registered and the fallback failed) prints "VIOLATION" and exits 3.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <sys/rseq.h>
#include <time.h>

int main(void)
{
	const struct timespec tick = {0, 5 * 1000 * 1000};
	char *area = (char *)__builtin_thread_pointer() + __rseq_offset;
	int last = -2;

	printf("ready area=%p size=%u sig=%#x\n", (void *)area, __rseq_size, RSEQ_SIG);
	fflush(stdout);
	for (;;) {
		int cpu = sched_getcpu();
		if (cpu < 0) {
			printf("VIOLATION sched_getcpu failed\n");
			fflush(stdout);
			return 3;
		}
		if (cpu != last) {
			printf("cpu %d\n", cpu);
			fflush(stdout);
			last = cpu;
		}
		nanosleep(&tick, NULL);
	}
}
