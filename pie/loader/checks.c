/*
 * What the exe loader checks before it builds anything: that the
 * executable is the one written (a crc32 of every byte but the last four,
 * which hold it), that this CPU has every xsave feature the process used
 * (its registers could not be loaded otherwise), and that each file the
 * process mapped is still the one it mapped (its size, then a crc32 of each
 * mapped range, read through the fresh mapping).
 *
 * crc32 is zlib's (reflected, polynomial 0xEDB88320), so the writer computes
 * it with zlib.crc32; the table is built at first use, eight tables of 256
 * entries read eight bytes per step ("slicing by 8").
 */
#include "loader.h"
#include "log.h"
#include "syscall.h"
#include "uapi.h"

static u32 crc_table[8][256];

static void build_crc_table(void)
{
	u32 i, j;

	for (i = 0; i < 256; i++) {
		u32 c = i;

		for (j = 0; j < 8; j++)
			c = c & 1 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (j = 1; j < 8; j++)
			crc_table[j][i] = (crc_table[j - 1][i] >> 8) ^ crc_table[0][crc_table[j - 1][i] & 0xff];
}

u32 crc32(u32 crc, const u8 *data, u64 len)
{
	if (!crc_table[0][1])
		build_crc_table();
	crc = ~crc;
	while (len && ((u64)data & 7)) {
		crc = crc_table[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
		len--;
	}
	while (len >= 8) {
		u64 word = *(const u64 *)data ^ crc;

		crc = crc_table[7][word & 0xff] ^ crc_table[6][(word >> 8) & 0xff] ^ crc_table[5][(word >> 16) & 0xff] ^
		      crc_table[4][(word >> 24) & 0xff] ^ crc_table[3][(word >> 32) & 0xff] ^
		      crc_table[2][(word >> 40) & 0xff] ^ crc_table[1][(word >> 48) & 0xff] ^ crc_table[0][word >> 56];
		data += 8;
		len -= 8;
	}
	while (len--)
		crc = crc_table[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

long open_exe(void)
{
	long fd = sys_call4(__NR_openat, AT_FDCWD, "/proc/self/exe", O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		loader_fail("cannot open /proc/self/exe (is /proc mounted?)", fd, 0);
	return fd;
}

void check_exe_checksum(int fd)
{
	struct kernel_stat st;
	long map, ret;
	u32 stored;

	ret = sys_call2(__NR_fstat, fd, &st);
	if (ret)
		loader_fail("cannot stat the executable", ret, 0);
	if (st.size < 4)
		loader_fail("the executable is truncated", -EIO, (u64)st.size);
	map = sys_call6(__NR_mmap, 0, st.size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (IS_ERR_VALUE(map))
		loader_fail("cannot map the executable to check it", map, (u64)st.size);
	stored = *(const u32 *)(map + st.size - 4);
	ret = crc32(0, (const u8 *)map, (u64)st.size - 4) != stored;
	sys_call2(__NR_munmap, map, st.size);
	if (ret)
		loader_fail("the executable is corrupt (its checksum does not match)", -EIO, stored);
}

static u64 xgetbv0(void)
{
	u32 eax, ebx, ecx, edx, lo, hi;

	__asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
	if (!(ecx & (1U << 27))) /* OSXSAVE: no XCR0 to read, only x87 and SSE state */
		return 3;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (u64)hi << 32 | lo;
}

void check_xfeatures(const struct loader_args *la)
{
	u64 missing = la->xfeatures & ~xgetbv0();

	if (missing)
		loader_fail("this CPU lacks xsave features the process used", -ENOSYS, missing);
}

void open_mapped_files(const struct loader_args *la)
{
	const struct loader_file *files = (const struct loader_file *)la->files;
	u32 i;

	for (i = 0; i < la->nr_files; i++) {
		const struct loader_file *f = &files[i];
		struct kernel_stat st;
		long fd = sys_call4(__NR_openat, AT_FDCWD, f->path, f->flags | O_CLOEXEC, 0);
		long ret;

		if (fd < 0) {
			log_line("revive exe: %s: cannot open it (errno %ld): it is missing or unreadable", (const char *)f->path,
				 -fd);
			sys_call1(__NR_exit_group, 1);
		}
		ret = sys_call2(__NR_fstat, fd, &st);
		if (ret || (u64)st.size != f->size) {
			log_line("revive exe: %s: changed since the dump (size %ld, was %lu)", (const char *)f->path,
				 (long)st.size, f->size);
			sys_call1(__NR_exit_group, 1);
		}
		if (fd != f->fd) {
			ret = sys_call3(__NR_dup3, fd, f->fd, O_CLOEXEC);
			if (ret < 0)
				loader_fail("cannot move a mapped file's descriptor", ret, (u64)f->fd);
			sys_call1(__NR_close, fd);
		}
	}
}

void check_mapped_files(const struct loader_args *la)
{
	const struct loader_check *checks = (const struct loader_check *)la->checks;
	u32 i;

	for (i = 0; i < la->nr_checks; i++) {
		const struct loader_check *c = &checks[i];

		if (crc32(0, (const u8 *)c->start, c->length) != c->crc) {
			log_line("revive exe: %s: changed since the dump (the bytes it mapped at %p differ)",
				 (const char *)c->path, (void *)c->start);
			sys_call1(__NR_exit_group, 1);
		}
	}
}
