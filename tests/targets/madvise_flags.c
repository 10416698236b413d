/*
 * Restore target for madvise advice that stays on a mapping (smaps VmFlags).
 *
 * Maps one private anonymous region per advice (DONTFORK, WIPEONFORK,
 * DONTDUMP, HUGEPAGE, NOHUGEPAGE, MERGEABLE, SEQUENTIAL, RANDOM), one region carrying two
 * (DONTFORK and DONTDUMP) and a private mapping of the file "backing" in
 * the working directory with DONTDUMP; fills each with a pattern of its own
 * and applies the advice. Prints "ready pid=.. NAME=0x.. ... pages=N", then
 * every 10 ms "tick N" and looks for command files in its directory:
 *   verify  prints "verify ok" or "verify bad NAME OFFSET" (every pattern intact)
 *   fork    forks a child that reads the WIPEONFORK region (expects zeros) and
 *           then touches the DONTFORK region (expects to die of SIGSEGV);
 *           prints "fork wiped=0|1 child=STATUS" (STATUS: signal N or exit N)
 * Each command file is removed once done.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGES 4
#define SIZE (PAGES * 4096)

struct region {
	const char *name;
	int advice[2]; /* 0 ends the list: no advice this target uses is MADV_NORMAL */
	int file;
	unsigned char *addr;
};

static struct region regions[] = {
	{ "dontfork", { MADV_DONTFORK } },
	{ "wipeonfork", { MADV_WIPEONFORK } },
	{ "dontdump", { MADV_DONTDUMP } },
	{ "hugepage", { MADV_HUGEPAGE } },
	{ "nohugepage", { MADV_NOHUGEPAGE } },
	{ "mergeable", { MADV_MERGEABLE } },
	{ "sequential", { MADV_SEQUENTIAL } },
	{ "random", { MADV_RANDOM } },
	{ "dontfork_dontdump", { MADV_DONTFORK, MADV_DONTDUMP } },
	{ "file_dontdump", { MADV_DONTDUMP }, 1 },
};
#define NR_REGIONS (sizeof(regions) / sizeof(regions[0]))

static unsigned char pattern(unsigned region, unsigned offset)
{
	return (unsigned char)(region * 37 + offset * 7 + offset / 4096 + 1);
}

static struct region *find(const char *name)
{
	for (unsigned r = 0; r < NR_REGIONS; r++)
		if (!strcmp(regions[r].name, name))
			return &regions[r];
	return NULL;
}

static int map_region(struct region *r)
{
	int fd = -1;

	if (r->file) {
		fd = open("backing", O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, SIZE))
			return -1;
	}
	/* A guard page on each side keeps neighbours with the same flags from merging into it. */
	r->addr = mmap(NULL, SIZE + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->addr == MAP_FAILED)
		return -1;
	r->addr += 4096;
	if (mmap(r->addr, SIZE, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | (r->file ? 0 : MAP_ANONYMOUS),
		 fd, 0) == MAP_FAILED)
		return -1;
	if (fd >= 0)
		close(fd);
	for (unsigned i = 0; i < 2 && r->advice[i]; i++)
		if (madvise(r->addr, SIZE, r->advice[i]))
			return -1;
	for (unsigned off = 0; off < SIZE; off++)
		r->addr[off] = pattern(r - regions, off);
	return 0;
}

static void verify(void)
{
	for (unsigned r = 0; r < NR_REGIONS; r++)
		for (unsigned off = 0; off < SIZE; off++)
			if (regions[r].addr[off] != pattern(r, off)) {
				printf("verify bad %s %u\n", regions[r].name, off);
				return;
			}
	printf("verify ok\n");
}

static void fork_and_touch(void)
{
	const unsigned char *wipe = find("wipeonfork")->addr;
	volatile unsigned char *gone = find("dontfork")->addr;
	int status, wiped = 1;
	pid_t child = fork();

	if (child == 0) {
		for (unsigned off = 0; off < SIZE; off++)
			if (wipe[off])
				_exit(2);
		gone[0] = 1; /* not in the child: SIGSEGV */
		_exit(3);
	}
	if (child < 0 || waitpid(child, &status, 0) != child) {
		printf("fork failed\n");
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
		wiped = 0;
	if (WIFSIGNALED(status))
		printf("fork wiped=%d child=signal_%d\n", wiped, WTERMSIG(status));
	else
		printf("fork wiped=%d child=exit_%d\n", wiped, WEXITSTATUS(status));
}

int main(void)
{
	for (unsigned r = 0; r < NR_REGIONS; r++)
		if (map_region(&regions[r])) {
			perror(regions[r].name);
			return 1;
		}
	printf("ready pid=%d", getpid());
	for (unsigned r = 0; r < NR_REGIONS; r++)
		printf(" %s=%p", regions[r].name, (void *)regions[r].addr);
	printf(" pages=%d\n", PAGES);
	fflush(stdout);
	for (unsigned long tick = 0;; tick++) {
		struct timespec ten_ms = { 0, 10000000 };

		while (nanosleep(&ten_ms, &ten_ms))
			;
		printf("tick %lu\n", tick);
		if (!unlink("verify"))
			verify();
		if (!unlink("fork"))
			fork_and_touch();
		fflush(stdout);
	}
}
