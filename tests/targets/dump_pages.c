/* Dump target: an address space with known pages in every kind of mapping.
 *
 * anon:   64 private anonymous pages; page i written with pattern_word(i, j)
 *         when i % 3 == 0 or 1, read only (zero page) when i % 3 == 2 and
 *         i % 6 == 2, never touched otherwise.
 * file:   argv[1] (8 pages of file_word(i, j)) mapped MAP_PRIVATE, every page
 *         read, pages 2 and 5 then written (copied on write).
 * none:   4 PROT_NONE pages.   gd: 4 MAP_GROWSDOWN pages, the top one written.
 * shanon: 2 MAP_SHARED|MAP_ANONYMOUS pages, both written.
 * counter: a word that keeps growing.
 * Prints "ready key=value ..." (mincore= is the anon region's residency as
 * the process itself sees it) and then counts forever.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define ANON_PAGES 64
#define FILE_PAGES 8

static volatile uint64_t counter;

static uint64_t pattern_word(uint64_t page, uint64_t j) { return 0xA5A5000000000000ull | page << 20 | j; }
static uint64_t file_word(uint64_t page, uint64_t j) { return 0xF11E000000000000ull | page << 20 | j; }

static void *map(size_t len, int prot, int flags, int fd) {
	void *p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(1); }
	return p;
}

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: dump_pages FILE\n"); return 2; }
	uint64_t *anon = map(ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	volatile uint64_t sink = 0;
	for (uint64_t i = 0; i < ANON_PAGES; i++) {
		uint64_t *page = anon + i * PAGE / 8;
		if (i % 3 != 2)
			for (uint64_t j = 0; j < PAGE / 8; j++) page[j] = pattern_word(i, j);
		else if (i % 6 == 2)
			sink += page[0];
	}

	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) { perror("open"); return 1; }
	static uint64_t buf[PAGE / 8];
	for (uint64_t i = 0; i < FILE_PAGES; i++) {
		for (uint64_t j = 0; j < PAGE / 8; j++) buf[j] = file_word(i, j);
		if (write(fd, buf, PAGE) != PAGE) { perror("write"); return 1; }
	}
	uint64_t *file = map(FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
	close(fd);
	for (uint64_t i = 0; i < FILE_PAGES; i++) sink += file[i * PAGE / 8];
	file[2 * PAGE / 8] = 0xC0C0C0C0;
	file[5 * PAGE / 8 + 7] = 0xC0C0C0C5;

	void *none = map(4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	char *gd = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1);
	gd[4 * PAGE - 1] = 0x6d;
	char *shanon = map(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
	shanon[0] = 0x51;
	shanon[PAGE] = 0x52;

	unsigned char vec[ANON_PAGES];
	if (mincore(anon, ANON_PAGES * PAGE, vec)) { perror("mincore"); return 1; }
	char residency[ANON_PAGES + 1];
	for (int i = 0; i < ANON_PAGES; i++) residency[i] = (vec[i] & 1) ? '1' : '0';
	residency[ANON_PAGES] = 0;

	printf("ready anon=%p file=%p none=%p gd=%p shanon=%p counter=%p mincore=%s\n",
	       (void *)anon, (void *)file, none, (void *)gd, (void *)shanon, (void *)&counter, residency);
	fflush(stdout);
	struct timespec tick = {0, 10 * 1000 * 1000};
	for (;;) {
		counter++;
		nanosleep(&tick, NULL);
	}
}
