"""epoll(7): an instance and its interest list, registered again once the process's other fds are back.

Why from fdinfo: /proc/PID/fdinfo lists every watched file as `tfd: N
events: MASK data: DATA ... ino: I sdev: D`: the fd number it was added
under, the mask (EPOLLET, EPOLLONESHOT, ... included; a one-shot that fired
shows no events left, and is registered so, disarmed) and the 64 bits it
reports. The dump checks that fd N of the process is still that file (by
inode and device): an fd closed, or another file put at that number since,
is refused, since the restore registers what it finds at the number. The
restore makes the instance after every other fd of the process
(after_others) and adds each target with its mask and data: a file ready at
the dump is reported ready again. An edge-triggered target that was ready
is reported once more after the restore (a new registration looks at it
anew).

An instance may watch another (the kernel allows nesting up to
EP_MAX_NESTS deep, and no loop): the inner one is made first
(open_order). An instance several processes share (after a fork) is
refused: its targets would have to exist in the process that makes it
before that process forks.
"""

import ctypes
import os
import re
import select
from collections.abc import Callable

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files.base import FileKindBase, place, refuse_payload
from runtime.images.model import EpollTarget, FdKind, FileEntry
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.fds import FileKind, OpenFile
from runtime.kernel.procfs.files import proc_path

LINK = "anon_inode:[eventpoll]"
EP_MAX_NESTS = 4  # fs/eventpoll.c: instances inside instances, at most this deep
EPOLL_CTL_ADD = 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


# fs/eventpoll.c ep_show_fdinfo: "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x".
_TARGET = re.compile(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*-?\d+\s+"
                     r"ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+)")


def parse_targets(pid: int, fd: int, text: str) -> list[tuple[EpollTarget, int, int]]:
    """(target, inode, device) of each `tfd:` line of an epoll instance's fdinfo text."""
    found = []
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        match = _TARGET.match(line)
        if match is None:
            raise DumpError(pid, f"fd {fd}: an epoll line fdinfo prints unlike this runtime reads: {line!r}")
        tfd, events, data, inode, device = match.groups()
        found.append((EpollTarget(int(tfd), int(events, 16), int(data, 16)), int(inode, 16), int(device, 16)))
    return found


class EpollInstance(FileKindBase):
    kind = FdKind.EPOLL
    shareable = False

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.ANON_INODE and open_file.link == LINK

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        targets = []
        for target, inode, device in parse_targets(pid, open_file.fd, open_file.fdinfo):
            try:
                st = os.stat(proc_path(pid, f"fd/{target.fd}"))
            except FileNotFoundError:
                st = None  # closed since it was added
            if st is None or (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev)) != \
                    (inode, os.major(device), os.minor(device)):
                raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}): it watches a file that is no "
                                     f"longer open at fd {target.fd} (closed or replaced since): not supported")
            targets.append(target)
        return FileEntry(file_id, self.kind, flags=open_file.flags, epoll=tuple(targets))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.epoll is None:
            raise ImageError(file, f"{field}.epoll", "an epoll instance needs its interest list")
        for index, target in enumerate(entry.epoll):
            if target.events > U32_MAX or target.data > U64_MAX:
                raise ImageError(file, f"{field}.epoll[{index}]", "an events mask is 32 bits, data 64")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        instance = select.epoll()
        try:
            for target in entry.epoll:
                _add(instance.fileno(), target)
        except OSError as exc:
            instance.close()
            raise RestoreError(pid, f"fd {number}: epoll_ctl(ADD) of fd {target.fd}: {exc.strerror}") from exc
        made = os.dup(instance.fileno())  # select.epoll closes its own descriptor with it
        instance.close()
        return place(made, number, inheritable)

    def open_order(self, entry: FileEntry, entry_at: Callable[[int], FileEntry | None], depth: int = 0) -> int:
        """After every other kind (1), and after each instance it watches (one more than the deepest).

        A ValueError for a loop or a nesting deeper than the kernel allows,
        which no dump writes (the image checks call this).
        """
        if depth > EP_MAX_NESTS:
            raise ValueError(f"epoll instances nested more than {EP_MAX_NESTS} deep, or in a loop")
        inner = (entry_at(target.fd) for target in entry.epoll)
        return 1 + max((self.open_order(e, entry_at, depth + 1) for e in inner if e is not None and
                        e.kind is FdKind.EPOLL), default=0)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        watched = ", ".join(f"{t.fd} ({t.events:#x})" for t in entry.epoll) or "nothing"
        return f"epoll watching {watched}", ""


def _add(epfd: int, target: EpollTarget) -> None:
    """epoll_ctl(ADD) with the whole 64-bit data, which select.epoll.register cannot set."""
    event = _EpollEvent(target.events, target.data)
    if _libc.epoll_ctl(epfd, EPOLL_CTL_ADD, target.fd, ctypes.byref(event)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _EpollEvent(ctypes.Structure):
    """struct epoll_event: packed on x86_64 (__EPOLL_PACKED)."""

    _pack_ = 1
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


KIND = EpollInstance()
