/*
 * sysv_shm: a SysV shared memory segment with known state, which checks that state itself once told to go.
 *
 * Usage: sysv_shm KEY [fork] [rmid] [partial] [lock]
 *   KEY      the segment's key, hex (the test picks one no other segment has)
 *   fork     a child forked after the attaches shares both of them
 *   rmid     IPC_RMID once attached: the segment stays while attached, without its key
 *   partial  the last page of the read-write attach unmapped (a dump refuses that)
 *   lock     SHM_LOCK: its pages kept in memory
 *
 * The segment is SIZE bytes (not whole pages), each byte i holding PATTERN(i). It is
 * attached twice: read-write at `rw` (its middle page then made read-only with
 * mprotect, which splits that attach in three VMAs) and SHM_RDONLY at `ro`. Prints
 * "ready pid=P shmid=N rw=ADDR ro=ADDR [child=C]", then waits for a file "go" in the
 * working directory and reports, one line each:
 *   data ok|bad          the pattern, read through the read-only attach
 *   id ID                shmget(KEY, 0, 0) now (-1 with rmid: the key is gone)
 *   outside ok|bad       the bytes a second process wrote at OUTSIDE_AT before "go"
 *   write ok|bad         a write through the read-write attach, read back through the other
 *   reprotect ok|bad     the middle page made writable again and written
 *   rdonly ok|bad        the SHM_RDONLY attach refuses PROT_WRITE (EACCES): it was attached read-only
 *   shared ok|bad        (fork) parent and child each see what the other wrote after the restore
 * and the child, with fork, "child data ok|bad" and "child shared ok|bad". Then both sleep.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "say.h"

#define PAGE 4096UL
#define SIZE (3 * PAGE + 100)
#define PATTERN(i) ((unsigned char)((i) * 7 + 3))
#define OUTSIDE_AT 500 /* the test writes OUTSIDE there through its own attach */
#define OUTSIDE "from outside"
#define WRITE_AT 1000 /* where the restored parent writes, read back through the read-only attach */
#define PARENT_AT (2 * PAGE + 16) /* what the parent writes for the child to see, and back */
#define CHILD_AT (2 * PAGE + 64)
#define PATTERN_FROM 2048 /* the pattern is checked from here on: the bytes below carry the messages */

static void wait_for_go(void)
{
	struct stat st;

	while (stat("go", &st) != 0)
		usleep(10000);
}

/* The bytes the messages and the reprotect write go to; every other byte keeps the pattern. */
static int written_later(unsigned long i)
{
	return i < PATTERN_FROM || (i >= PAGE && i < PAGE + 64) || (i >= PARENT_AT && i < CHILD_AT + 16);
}

static int pattern_intact(const unsigned char *ro)
{
	unsigned long i;

	for (i = 0; i < SIZE; i++)
		if (!written_later(i) && ro[i] != PATTERN(i))
			return 0;
	return 1;
}

static int wait_for_text(const unsigned char *at, const char *text)
{
	int tries;

	for (tries = 0; tries < 1000; tries++) {
		if (memcmp(at, text, strlen(text)) == 0)
			return 1;
		usleep(10000);
	}
	return 0;
}

static void child_loop(unsigned char *rw, const unsigned char *ro)
{
	wait_for_go();
	say("child data %s\n", pattern_intact(ro) ? "ok" : "bad");
	memcpy(rw + CHILD_AT, "child was here", 14);
	say("child shared %s\n", wait_for_text(ro + PARENT_AT, "parent was here") ? "ok" : "bad");
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	key_t key;
	int shmid, i, fork_child = 0, rmid = 0, partial = 0, lock = 0;
	unsigned char *rw, *ro;
	pid_t child = 0;

	if (argc < 2)
		return 2;
	key = (key_t)strtoul(argv[1], NULL, 16);
	for (i = 2; i < argc; i++) {
		fork_child |= strcmp(argv[i], "fork") == 0;
		rmid |= strcmp(argv[i], "rmid") == 0;
		partial |= strcmp(argv[i], "partial") == 0;
		lock |= strcmp(argv[i], "lock") == 0;
	}
	shmid = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0640);
	if (shmid < 0)
		return 3;
	rw = shmat(shmid, NULL, 0);
	ro = shmat(shmid, NULL, SHM_RDONLY);
	if (rw == (void *)-1 || ro == (void *)-1)
		return 4;
	for (i = 0; i < (int)SIZE; i++)
		rw[i] = PATTERN(i);
	if (mprotect(rw + PAGE, PAGE, PROT_READ) != 0)
		return 5;
	if (partial && munmap(rw + 3 * PAGE, PAGE) != 0)
		return 6;
	if (rmid && shmctl(shmid, IPC_RMID, NULL) != 0)
		return 7;
	if (lock && shmctl(shmid, SHM_LOCK, NULL) != 0)
		return 9;
	if (fork_child) {
		child = fork();
		if (child < 0)
			return 8;
		if (child == 0)
			child_loop(rw, ro);
	}
	if (child)
		say("ready pid=%d shmid=%d rw=%p ro=%p child=%d\n", getpid(), shmid, rw, ro, child);
	else
		say("ready pid=%d shmid=%d rw=%p ro=%p\n", getpid(), shmid, rw, ro);

	wait_for_go();
	say("data %s\n", pattern_intact(ro) ? "ok" : "bad");
	say("id %d\n", shmget(key, 0, 0));
	say("outside %s\n", memcmp(ro + OUTSIDE_AT, OUTSIDE, strlen(OUTSIDE)) == 0 ? "ok" : "bad");
	memcpy(rw + WRITE_AT, "written after", 13);
	say("write %s\n", memcmp(ro + WRITE_AT, "written after", 13) == 0 ? "ok" : "bad");
	if (mprotect(rw + PAGE, PAGE, PROT_READ | PROT_WRITE) == 0) {
		rw[PAGE + 1] = 0x5a;
		say("reprotect %s\n", ro[PAGE + 1] == 0x5a ? "ok" : "bad");
	} else {
		say("reprotect bad\n");
	}
	say("rdonly %s\n", mprotect(ro, PAGE, PROT_READ | PROT_WRITE) != 0 && errno == EACCES ? "ok" : "bad");
	if (child) {
		memcpy(rw + PARENT_AT, "parent was here", 15);
		say("shared %s\n", wait_for_text(ro + CHILD_AT, "child was here") ? "ok" : "bad");
	}
	for (;;)
		pause();
}
