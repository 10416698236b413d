"""Opening a file by its path as a given descriptor number, without being led to another file.

Why its own module: the restoring child opens the files a process maps, its
exe and the files of regular.py and chrdev.py this one way, so each gets the
same hardening (no symlink followed, the file type checked before the open,
no terminal or carrier wait).
"""

import errno
import fcntl
import os
import stat

from runtime.errors import RestoreError, shorten
from runtime.files.base import place
from runtime.images.model import FileEntry
from runtime.kernel import fileopen
from runtime.kernel.procfs.fds import MEM_MAJOR

# Flags /proc/PID/fdinfo reports that open() must not see again: creation and
# truncation would change the file; close-on-exec is the slot's, set by inheritable.
OPEN_FLAGS_DROPPED = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC


def open_at(path: str, flags: int, kind: int, number: int, inheritable: bool) -> None:
    """path opened with flags as descriptor number, if it is a file of type kind (stat.S_IFREG, ...).

    A character device must be one of the memory devices the dump records (/dev/null,
    /dev/zero, ...: major 1). It is opened O_NONBLOCK (the flag cleared after, unless the
    image has it) and O_NOCTTY: a serial line's open waits for its carrier, and a
    terminal's would become the child's controlling terminal.
    """
    place(open_checked(path, flags, kind), number, inheritable)


def open_checked(path: str, flags: int, kind: int) -> int:
    """open_at's open and checks, at the lowest free number (close-on-exec)."""
    path_fd, st = fileopen.look(path)
    try:
        if stat.S_IFMT(st.st_mode) != kind:
            raise OSError(errno.EINVAL, f"{fileopen.describe_kind(st.st_mode)}, not {fileopen.describe_kind(kind)}")
        if kind == stat.S_IFCHR and os.major(st.st_rdev) != MEM_MAJOR:
            raise OSError(errno.EINVAL, f"character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}, "
                                        f"not a memory device ({MEM_MAJOR}:N)")
        fd = fileopen.reopen(path_fd, flags | os.O_NONBLOCK | os.O_NOCTTY)
    finally:
        os.close(path_fd)
    if not flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def reopen_entry(entry: FileEntry, number: int, inheritable: bool, pid: int, seek: bool) -> int:
    """entry's node reopened as number with its flags (and at its offset if seek); RestoreError naming the fd."""
    assert entry.node is not None  # the kind's check refused an entry without one
    try:
        open_at(entry.node.path, entry.flags & ~OPEN_FLAGS_DROPPED, stat.S_IFMT(entry.node.mode), number,
                inheritable)
        if seek:
            os.lseek(number, entry.pos, os.SEEK_SET)
    except OSError as exc:
        raise RestoreError(pid, f"fd {number}: cannot reopen {shorten(entry.node.path)}: {exc.strerror}") from exc
    return number
