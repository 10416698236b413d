"""Opening a file only once it is known to be the kind of file expected: look first, then open.

Why: opening is not a harmless question. open() of a FIFO blocks until a
writer comes (a restore that names one hangs), open() of a device runs its
driver's open (a tape rewinds, a watchdog starts), and a symlink planted in
an image directory points a check at one file and a later read at another.
So every file an image names is first opened with O_PATH, which touches
only the directory entry; fstat says what it is; and only a file of the
expected kind is opened for reading or writing, through /proc/self/fd/N,
which reopens that very inode (never the path again, which may have
changed since). The reopen checks permissions against the caller's
credentials at that moment, as any open does.
"""

import os
import stat

_KIND_NAMES = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}

# The reopen goes through a /proc magic link, which O_NOFOLLOW would refuse; the caller's
# O_NOFOLLOW already applied when the O_PATH descriptor was opened.
_NOT_ON_REOPEN = os.O_NOFOLLOW | os.O_CREAT | os.O_EXCL | os.O_TRUNC


def describe_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for an st_mode, for messages."""
    return _KIND_NAMES.get(stat.S_IFMT(mode), f"a file of type {stat.S_IFMT(mode):#o}")


def look(path: str | os.PathLike, *, dir_fd: int | None = None, follow: bool = True) -> tuple[int, os.stat_result]:
    """An O_PATH descriptor of path and its fstat; OSError if there is nothing to look at.

    With follow=False a symlink is not followed: the result is the link itself (S_IFLNK).
    """
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        raise


def reopen(path_fd: int, flags: int) -> int:
    """The file behind an O_PATH descriptor opened with flags (the same inode, whatever its path is now)."""
    return os.open(f"/proc/self/fd/{path_fd}", flags & ~_NOT_ON_REOPEN)
