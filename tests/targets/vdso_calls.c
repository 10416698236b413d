/* vDSO target: calls the vDSO through pointers it resolved itself, never through libc.
 *
 * At start it finds the vDSO from getauxval(AT_SYSINFO_EHDR), walks its ELF
 * dynamic symbol table itself and keeps pointers to __vdso_clock_gettime,
 * __vdso_gettimeofday, __vdso_time, __vdso_getcpu and __vdso_clock_getres.
 * Why not libc: glibc keeps its own pointers, resolved once at start-up, and
 * the tests must show that pointers taken BEFORE a dump still work after a
 * restore through a proxy; libc's own time functions are never called.
 *
 * argv[1] == "top": first maps a page at the very top of the user address
 * space, so nothing fits after the last VMA.
 *
 * Signals (handled in the main loop, not in the handler):
 *   SIGHUP   re-resolve the pointers from the ELF at AT_SYSINFO_EHDR (a test
 *            that replaced the vDSO's bytes wants pointers into the new layout)
 *            and print "resolved ...";
 *   SIGUSR1  call every function through the saved pointers, print "report ...";
 *   SIGUSR2  time 200000 clock_gettime calls through the saved pointer and
 *            through a pointer into the [vdso] /proc/self/maps shows now,
 *            print "bench proxied_ns=... direct_ns=...".
 * Lines go to stdout with write(2), one per event.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TOP_PAGE 0x7fffffffe000UL
#define BENCH_CALLS 200000

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);
typedef long (*getcpu_fn)(unsigned *, unsigned *, void *);
typedef int (*clock_getres_fn)(clockid_t, struct timespec *);

struct vdso_fns {
	clock_gettime_fn clock_gettime;
	gettimeofday_fn gettimeofday;
	time_fn time;
	getcpu_fn getcpu;
	clock_getres_fn clock_getres;
};

static struct vdso_fns fns;
static volatile sig_atomic_t pending_hup, pending_usr1, pending_usr2;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		pending_hup = 1;
	else if (sig == SIGUSR1)
		pending_usr1 = 1;
	else
		pending_usr2 = 1;
}

static void say(const char *line)
{
	size_t len = strlen(line);

	if (write(1, line, len) != (ssize_t)len)
		_exit(3);
}

static void die(const char *what)
{
	char line[256];

	snprintf(line, sizeof(line), "error %s\n", what);
	say(line);
	_exit(2);
}

/* The address of a dynamic symbol of the ELF image mapped at base, or 0. */
static void *lookup(uintptr_t base, const char *name)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
	const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
	const Elf64_Dyn *dyn = NULL;
	const Elf64_Sym *symtab = NULL;
	const char *strtab = NULL;
	const Elf32_Word *hash = NULL;
	uintptr_t bias = 0;
	int load_seen = 0;

	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && !load_seen) {
			bias = base - ph[i].p_vaddr;
			load_seen = 1;
		} else if (ph[i].p_type == PT_DYNAMIC) {
			dyn = (const Elf64_Dyn *)(base + ph[i].p_offset);
		}
	}
	if (!dyn)
		return NULL;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		if (dyn->d_tag == DT_SYMTAB)
			symtab = (const Elf64_Sym *)(bias + dyn->d_un.d_ptr);
		else if (dyn->d_tag == DT_STRTAB)
			strtab = (const char *)(bias + dyn->d_un.d_ptr);
		else if (dyn->d_tag == DT_HASH)
			hash = (const Elf32_Word *)(bias + dyn->d_un.d_ptr);
	}
	if (!symtab || !strtab || !hash)
		return NULL;
	/* nchain, the second word of the SysV hash table, is the number of symbols. */
	for (Elf32_Word i = 0; i < hash[1]; i++) {
		if (symtab[i].st_shndx != SHN_UNDEF && !strcmp(strtab + symtab[i].st_name, name))
			return (void *)(bias + symtab[i].st_value);
	}
	return NULL;
}

static void resolve(uintptr_t base, struct vdso_fns *out)
{
	out->clock_gettime = (clock_gettime_fn)lookup(base, "__vdso_clock_gettime");
	out->gettimeofday = (gettimeofday_fn)lookup(base, "__vdso_gettimeofday");
	out->time = (time_fn)lookup(base, "__vdso_time");
	out->getcpu = (getcpu_fn)lookup(base, "__vdso_getcpu");
	out->clock_getres = (clock_getres_fn)lookup(base, "__vdso_clock_getres");
	if (!out->clock_gettime || !out->gettimeofday || !out->time || !out->getcpu || !out->clock_getres)
		die("a vDSO symbol is missing");
}

static void print_pointers(const char *tag, uintptr_t base)
{
	char line[512];

	snprintf(line, sizeof(line),
		 "%s vdso=%lx clock_gettime=%lx gettimeofday=%lx time=%lx getcpu=%lx clock_getres=%lx pid=%d\n",
		 tag, (unsigned long)base, (unsigned long)fns.clock_gettime, (unsigned long)fns.gettimeofday,
		 (unsigned long)fns.time, (unsigned long)fns.getcpu, (unsigned long)fns.clock_getres, getpid());
	say(line);
}

static long long ns_of(clockid_t clock)
{
	struct timespec ts;

	if (fns.clock_gettime(clock, &ts))
		die("clock_gettime");
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void report(void)
{
	struct timeval tv;
	struct timespec res;
	unsigned cpu = ~0u, node = ~0u;
	char line[512];
	long long rt = ns_of(CLOCK_REALTIME), mono = ns_of(CLOCK_MONOTONIC), boot = ns_of(CLOCK_BOOTTIME);
	long long rtc = ns_of(CLOCK_REALTIME_COARSE), monoc = ns_of(CLOCK_MONOTONIC_COARSE);
	long long raw = ns_of(CLOCK_MONOTONIC_RAW);

	if (fns.gettimeofday(&tv, NULL))
		die("gettimeofday");
	time_t t = fns.time(NULL);
	if (fns.getcpu(&cpu, &node, NULL))
		die("getcpu");
	if (fns.clock_getres(CLOCK_MONOTONIC, &res))
		die("clock_getres");
	snprintf(line, sizeof(line),
		 "report realtime=%lld monotonic=%lld boottime=%lld realtime_coarse=%lld monotonic_coarse=%lld "
		 "monotonic_raw=%lld tod_us=%lld time=%lld cpu=%u node=%u res_ns=%lld\n",
		 rt, mono, boot, rtc, monoc, raw, (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long long)t, cpu,
		 node, (long long)res.tv_sec * 1000000000LL + res.tv_nsec);
	say(line);
}

/* The start of the [vdso] mapping as the kernel shows it now. */
static uintptr_t current_vdso(void)
{
	static char buf[65536];
	int fd = open("/proc/self/maps", O_RDONLY);
	ssize_t n, got = 0;

	if (fd < 0)
		die("open maps");
	while ((n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	close(fd);
	buf[got] = 0;
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		char *end = strchr(line, '\n');
		char *hit = strstr(line, "[vdso]");

		if (hit && (!end || hit < end))
			return strtoul(line, NULL, 16);
	}
	die("no [vdso] in /proc/self/maps");
	return 0;
}

static long long per_call_ns(clock_gettime_fn fn, clock_gettime_fn clock)
{
	struct timespec ts, a, b;

	clock(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < BENCH_CALLS; i++)
		fn(CLOCK_MONOTONIC, &ts);
	clock(CLOCK_MONOTONIC, &b);
	return ((b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec)) * 1000 / BENCH_CALLS;
}

static void bench(void)
{
	struct vdso_fns direct;
	char line[256];

	resolve(current_vdso(), &direct);
	long long proxied = per_call_ns(fns.clock_gettime, direct.clock_gettime);
	long long plain = per_call_ns(direct.clock_gettime, direct.clock_gettime);
	snprintf(line, sizeof(line), "bench calls=%d proxied_ps=%lld direct_ps=%lld proxied=%lx direct=%lx\n",
		 BENCH_CALLS, proxied, plain, (unsigned long)fns.clock_gettime,
		 (unsigned long)direct.clock_gettime);
	say(line);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t mask, old;
	uintptr_t base = getauxval(AT_SYSINFO_EHDR);

	if (argc > 1 && !strcmp(argv[1], "top") &&
	    mmap((void *)TOP_PAGE, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		 -1, 0) != (void *)TOP_PAGE)
		die("mmap top page");
	if (!base)
		die("no AT_SYSINFO_EHDR");
	resolve(base, &fns);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	sigprocmask(SIG_BLOCK, &mask, &old);
	print_pointers("ready", base);
	for (;;) {
		/* Signals arrive only inside sigsuspend, so no flag is lost between test and wait. */
		while (!pending_hup && !pending_usr1 && !pending_usr2)
			sigsuspend(&old);
		if (pending_hup) {
			pending_hup = 0;
			resolve(getauxval(AT_SYSINFO_EHDR), &fns);
			print_pointers("resolved", getauxval(AT_SYSINFO_EHDR));
		}
		if (pending_usr1) {
			pending_usr1 = 0;
			report();
		}
		if (pending_usr2) {
			pending_usr2 = 0;
			bench();
		}
	}
}
