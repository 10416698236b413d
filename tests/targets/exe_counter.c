/*
 * Target for `exe`: counts in a loop, printing "counter N pid P" every 20 ms, with a heap it grew before the
 * dump. Once it finds itself with another parent or PID than the ones it started with (resumed from an executable:
 * in its PID namespace it keeps its PID and has pid 1 as its parent, without one it has a new PID), it prints
 * "resumed pid=P ppid=Q sbrk=ADDRESS" (the break before anything else moved it), mallocs 100 MiB in 1 KiB
 * pieces, writes to each, and prints "malloc ok bytes=N sbrk=ADDRESS", then counts on. SIGTERM makes it print "term pid=P" and exit with status 7.
 * Prints "ready pid=.. counter=ADDRESS sbrk=ADDRESS" first. With a file name argument, it opens the file and
 * reads its first 5 bytes before the dump, and after the resume prints "file fd=N read=TEXT", the next 5 bytes
 * it reads from the same descriptor (the executable reopens the file at its offset).
 * It also keeps two pages of anonymous memory at HIGH (above where the kernel could place a PT_LOAD, so the
 * loader maps and fills them) holding a pattern, and prints "high=VALUE" after the resume.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

volatile long counter;
static volatile unsigned long *high;

#define HIGH 0x7ff100000000UL
#define HIGH_PATTERN 0x5eed5eed12345678UL

static void on_term(int sig)
{
	(void)sig;
	say("term pid=%d\n", (int)getpid());
	_exit(7);
}

static void grow_heap(void)
{
	/* A heap with something in it (kept: the pointers stay reachable). */
	static void *kept[64];
	int i;

	for (i = 0; i < 64; i++) {
		kept[i] = malloc(4096);
		memset(kept[i], i, 4096);
	}
}

static void malloc_100_mib(void)
{
	size_t total = 0;
	char *p;

	while (total < (100UL << 20)) {
		p = malloc(1024);
		if (!p) {
			say("malloc failed after %zu bytes\n", total);
			return;
		}
		p[0] = 1;
		p[1023] = 2;
		total += 1024;
	}
	say("malloc ok bytes=%zu sbrk=%p\n", total, sbrk(0));
}

static void read_on(int fd)
{
	char text[6] = "";

	if (fd >= 0 && read(fd, text, 5) == 5)
		say("file fd=%d read=%s\n", fd, text);
}

int main(int argc, char **argv)
{
	struct sigaction term = { .sa_handler = on_term };
	pid_t started = getpid(), parent = getppid();
	char first[5];
	int fd = -1;

	if (sigaction(SIGTERM, &term, NULL))
		return 1;

	if (argc > 1 && ((fd = open(argv[1], O_RDONLY)) < 0 || read(fd, first, 5) != 5))
		return 1;
	grow_heap();
	high = mmap((void *)HIGH, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (high != MAP_FAILED)
		high[512] = HIGH_PATTERN; /* the second page */
	say("ready pid=%d counter=%p sbrk=%p\n", started, (void *)&counter, sbrk(0));
	for (;;) {
		struct timespec twenty_ms = { 0, 20000000 };

		nanosleep(&twenty_ms, NULL);
		if (getppid() != parent || getpid() != started) {
			parent = getppid();
			started = getpid();
			say("resumed pid=%d ppid=%d sbrk=%p\n", (int)getpid(), (int)parent, sbrk(0));
			read_on(fd);
			say("high=%lx\n", high == MAP_FAILED ? 0UL : high[512]);
			malloc_100_mib();
		}
		counter++;
		say("counter %ld pid %d\n", counter, (int)getpid());
	}
}
