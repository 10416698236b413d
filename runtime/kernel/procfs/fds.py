"""Open file descriptors from /proc/PID/fd and /proc/PID/fdinfo, classified by kind.

Why both: the fd link names the file (or a pseudo name such as
"pipe:[123]" or "anon_inode:[eventfd]"), stat() through the link gives the
file type and device, and fdinfo gives what only the open file description
knows: its offset and open flags (O_CLOEXEC included, which the kernel adds
from the fd table). The dump decides from the kind what it can save.
"""

import enum
import os
import stat as stat_mod
from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import proc_path, read_link, read_text, translated

O_CLOEXEC = 0o2000000

# Character device majors (Documentation/admin-guide/devices.txt).
MEM_MAJOR = 1  # /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom ...
TTY_MAJORS = frozenset({4, 5} | set(range(136, 144)))  # ttyN/ttySN, /dev/tty + ptmx, pts


class FileKind(enum.Enum):
    REGULAR = "regular file"
    DIRECTORY = "directory"
    CHAR = "character device"
    TTY = "terminal"
    BLOCK = "block device"
    PIPE = "pipe"
    SOCKET = "socket"
    ANON_INODE = "anonymous inode"
    OTHER = "unknown file type"


@dataclass(frozen=True)
class OpenFile:
    fd: int
    link: str  # readlink of /proc/PID/fd/N
    kind: FileKind
    flags: int  # open flags from fdinfo, O_CLOEXEC included
    pos: int
    mode: int  # st_mode of the open file
    rdev: int  # device number for character and block devices
    nlink: int  # 0 for an unlinked file
    inode: int  # st_ino: with the link, which pipe or FIFO this is
    locks: tuple[str, ...] = ()  # the fdinfo "lock:" lines: file locks this open file holds or waits for
    fdinfo: str = ""  # the whole of /proc/PID/fdinfo/FD, for the kinds that read more of it
    protocol: str = ""  # a socket's protocol as the kernel names it (xattr system.sockprotoname): "TCP", "UDPv6", ...

    @property
    def cloexec(self) -> bool:
        return bool(self.flags & O_CLOEXEC)

    @property
    def description(self) -> str:
        if self.kind is FileKind.ANON_INODE:
            return f"{self.kind.value} {self.link.removeprefix('anon_inode:')}"
        if self.kind in (FileKind.CHAR, FileKind.TTY, FileKind.BLOCK):
            return f"{self.kind.value} {os.major(self.rdev)}:{os.minor(self.rdev)} {self.link}"
        return f"{self.kind.value} {self.link}"


def classify(link: str, st: os.stat_result) -> FileKind:
    if link.startswith("anon_inode:"):
        return FileKind.ANON_INODE
    fmt = stat_mod.S_IFMT(st.st_mode)
    if fmt == stat_mod.S_IFCHR:
        return FileKind.TTY if os.major(st.st_rdev) in TTY_MAJORS else FileKind.CHAR
    return {
        stat_mod.S_IFREG: FileKind.REGULAR,
        stat_mod.S_IFDIR: FileKind.DIRECTORY,
        stat_mod.S_IFBLK: FileKind.BLOCK,
        stat_mod.S_IFIFO: FileKind.PIPE,
        stat_mod.S_IFSOCK: FileKind.SOCKET,
    }.get(fmt, FileKind.OTHER)


def fdinfo_fields(text: str) -> dict[str, str]:
    """The text of /proc/PID/fdinfo/FD as name -> value, the first line of each name ("lock" has many)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    return fields


def parse_fdinfo(pid: int, fd: int, text: str) -> tuple[int, int, tuple[str, ...]]:
    """(pos, flags, lock lines) from the text of /proc/PID/fdinfo/FD."""
    values = fdinfo_fields(text)
    locks = [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("lock:")]
    try:
        return int(values["pos"]), int(values["flags"], 8), tuple(locks)
    except (KeyError, ValueError):
        raise ProcfsError(pid, f"/proc/{pid}/fdinfo/{fd}: no pos/flags lines in {text[:80]!r}") from None


def read_open_file(pid: int, fd: int) -> OpenFile:
    link = read_link(pid, f"fd/{fd}")
    with translated(pid, f"fd/{fd}"):
        st = os.stat(proc_path(pid, f"fd/{fd}"))
    fdinfo = read_text(pid, f"fdinfo/{fd}")
    pos, flags, locks = parse_fdinfo(pid, fd, fdinfo)
    kind = classify(link, st)
    protocol = ""
    if kind is FileKind.SOCKET:
        with translated(pid, f"fd/{fd}"):
            protocol = os.getxattr(proc_path(pid, f"fd/{fd}"), "system.sockprotoname").rstrip(b"\0").decode()
    return OpenFile(fd, link, kind, flags, pos, st.st_mode, st.st_rdev, st.st_nlink, st.st_ino, locks, fdinfo,
                    protocol)


def list_fds(pid: int) -> tuple[int, ...]:
    with translated(pid, "fd"):
        return tuple(sorted(int(name) for name in os.listdir(proc_path(pid, "fd"))))


def read_open_files(pid: int) -> tuple[OpenFile, ...]:
    """Every open fd; the process must be stopped, or an fd may close between listing and reading."""
    return tuple(read_open_file(pid, fd) for fd in list_fds(pid))


def find_holders(wanted: dict[str, int], exclude: set[int]) -> dict[int, list[int]]:
    """The processes (but those in exclude) holding an fd whose link is one of wanted's, by wanted's value.

    Every /proc/PID/fd of the machine is looked at: what holds a pipe (`pipe:[N]`) or a FIFO (its path).
    """
    if not wanted:
        return {}
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue  # gone, or a kernel thread's
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if link in wanted and int(name) not in found.setdefault(wanted[link], []):
                found[wanted[link]].append(int(name))
    return {pipe_id: pids for pipe_id, pids in found.items() if pids}
