/*
 * The process's descriptors in the executable: 0, 1 and 2 are the shell's
 * (as with restore --shell-job); every other one the writer accepted is a
 * file reopened by path with its flags, at its offset, under its number.
 */
#include "loader.h"
#include "log.h"
#include "syscall.h"
#include "uapi.h"

void reopen_fds(const struct loader_args *la)
{
	const struct loader_fd *fds = (const struct loader_fd *)la->fds;
	u32 i;

	for (i = 0; i < la->nr_fds; i++) {
		const struct loader_fd *f = &fds[i];
		long fd = sys_call4(__NR_openat, AT_FDCWD, f->path, f->flags | O_CLOEXEC, 0);
		long ret;

		if (fd < 0) {
			log_line("revive exe: fd %d: cannot open %s (errno %ld)", f->fd, (const char *)f->path, -fd);
			sys_call1(__NR_exit_group, 1);
		}
		ret = sys_call3(__NR_lseek, fd, f->pos, SEEK_SET);
		if (ret < 0)
			loader_fail("cannot seek a reopened file to its offset", ret, (u64)f->fd);
		if (fd == f->fd) {
			if (!f->cloexec)
				sys_call3(__NR_fcntl, fd, F_SETFD, 0);
			continue;
		}
		ret = sys_call3(__NR_dup3, fd, f->fd, f->cloexec ? O_CLOEXEC : 0);
		if (ret < 0)
			loader_fail("cannot move a reopened file to its number", ret, (u64)f->fd);
		sys_call1(__NR_close, fd);
	}
}
