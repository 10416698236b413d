/*
 * What the kernel mapped for the new process besides the PT_LOADs: its
 * stack and the running vDSO with its [vvar]/[vvar_vclock] pages, found by
 * name in /proc/self/maps (their places are random), and the vDSO moved to
 * where the dumped process had it when it is the same code.
 *
 * Why moved and not proxied: the process holds addresses inside its vDSO
 * (glibc's cached function pointers); the running one serves them only at
 * the same address, and only if it is byte for byte the dumped one with its
 * data pages at the same distances. A different vDSO is refused: the
 * executable carries no proxy (docs/exe.md).
 */
#include "loader.h"
#include "restore.h"
#include "string.h"
#include "syscall.h"
#include "uapi.h"

#define MAPS_BUFFER (1UL << 20)

static u64 parse_hex(const char **p)
{
	u64 v = 0;

	for (;; (*p)++) {
		char c = **p;

		if (c >= '0' && c <= '9')
			v = v << 4 | (u64)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (u64)(c - 'a' + 10);
		else
			return v;
	}
}

static int ends_with(const char *line, const char *end, const char *name)
{
	u64 n = strlen(name);

	return (u64)(end - line) >= n && !memcmp(end - n, name, n);
}

static void note_line(struct kernel_mappings *km, const char *line, const char *end)
{
	const char *p = line;
	u64 start = parse_hex(&p), stop;

	p++; /* '-' */
	stop = parse_hex(&p);
	if (ends_with(line, end, "[stack]"))
		km->stack_start = start, km->stack_end = stop;
	else if (ends_with(line, end, "[vdso]"))
		km->vdso_start = start, km->vdso_end = stop;
	else if (ends_with(line, end, "[vvar]"))
		km->vvar_start = start, km->vvar_end = stop;
	else if (ends_with(line, end, "[vvar_vclock]"))
		km->vclock_start = start, km->vclock_end = stop;
}

void read_kernel_mappings(struct kernel_mappings *km)
{
	long fd = sys_call4(__NR_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
	long buf = sys_call6(__NR_mmap, 0, MAPS_BUFFER, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	u64 used = 0;
	char *line, *end;

	if (fd < 0)
		loader_fail("cannot open /proc/self/maps (is /proc mounted?)", fd, 0);
	if (IS_ERR_VALUE(buf))
		loader_fail("cannot map a buffer for /proc/self/maps", buf, MAPS_BUFFER);
	for (;;) {
		long got = sys_call3(__NR_read, fd, (char *)buf + used, MAPS_BUFFER - 1 - used);

		if (got < 0)
			loader_fail("cannot read /proc/self/maps", got, used);
		if (!got)
			break;
		used += (u64)got;
		if (used == MAPS_BUFFER - 1)
			loader_fail("/proc/self/maps is larger than the loader's buffer", -EIO, used);
	}
	sys_call1(__NR_close, fd);
	memset(km, 0, sizeof(*km));
	for (line = (char *)buf; line < (char *)buf + used; line = end + 1) {
		for (end = line; end < (char *)buf + used && *end != '\n'; end++)
			;
		note_line(km, line, end);
	}
	sys_call2(__NR_munmap, buf, MAPS_BUFFER);
	if (!km->stack_start)
		loader_fail("the kernel gave this process no [stack] in /proc/self/maps", -EIO, 0);
}

static void unmap(u64 start, u64 end)
{
	if (end > start)
		sys_call2(__NR_munmap, start, end - start);
}

static int same_vdso(const struct loader_args *la, const struct kernel_mappings *km)
{
	if (!km->vdso_start || km->vdso_end - km->vdso_start != la->vdso_size)
		return 0;
	if (memcmp((const void *)km->vdso_start, (const void *)la->vdso_image, la->vdso_size))
		return 0;
	/* Its code reaches its data pages RIP-relative: the same sizes at the same distances. */
	if (km->vvar_end - km->vvar_start != la->vvar_size || km->vclock_end - km->vclock_start != la->vclock_size)
		return 0;
	if (la->vvar_size && km->vdso_start - km->vvar_start != la->vdso_start - la->vvar_start)
		return 0;
	if (la->vclock_size && km->vdso_start - km->vclock_start != la->vdso_start - la->vclock_start)
		return 0;
	return 1;
}

static void add_move(struct restorer_args *args, u64 from, u64 from_end, u64 to)
{
	struct restorer_remap *m = &args->vdso_moves[args->nr_vdso_moves++];

	m->old_addr = from;
	m->new_addr = to;
	m->size = from_end - from;
}

void place_vdso(const struct loader_args *la, struct restorer_args *args, const struct kernel_mappings *km)
{
	u64 d = 0;
	long ret;

	args->nr_vdso_moves = 0;
	if (!la->vdso_size) { /* the dumped process had none: nothing of the kernel's may stay in its layout */
		unmap(km->vdso_start, km->vdso_end);
		unmap(km->vvar_start, km->vvar_end);
		unmap(km->vclock_start, km->vclock_end);
		return;
	}
	if (!same_vdso(la, km))
		loader_fail("the running kernel's vDSO is not the dumped one (run the executable under the kernel "
			    "it was dumped on)", -ENOSYS, km->vdso_start);
	if (la->vvar_size)
		add_move(args, km->vvar_start, km->vvar_end, la->vvar_start);
	if (la->vclock_size)
		add_move(args, km->vclock_start, km->vclock_end, la->vclock_start);
	add_move(args, km->vdso_start, km->vdso_end, la->vdso_start);
	if (la->vvar_size + la->vclock_size + la->vdso_size > LOADER_VDSO_TEMP_SIZE)
		loader_fail("the vDSO is larger than the loader's room to move it", -EINVAL, la->vdso_size);
	args->vdso_temp = la->temp;
	ret = move_vdso(args, &d);
	if (ret)
		loader_fail("cannot move the vDSO to its dumped address", ret, d);
}
