"""Pipes: each end an open file of the tree, the pipe itself (capacity, bytes in flight) saved once.

Why the pipe is the tree's and its ends are entries: pipe(2) makes one
object with two open files, a read end and a write end, which fork and dup
spread over processes and numbers. A restore makes the pipe once, in the
nearest common ancestor of the processes holding its ends, before it forks
them (restore/spawn.py), and puts each end at the number every holder
finds it at; a third open file of the same end (one reopened through
/proc/PID/fd) is opened again through /proc/self/fd, as it was made.

The bytes in flight are read without consuming them: the dump opens the
pipe once more through /proc/PID/fd/N (a new reader, while every process
of the tree is stopped) and tee(2)s what it holds into a pipe of its own,
which it reads. Packet mode (O_DIRECT) keeps message boundaries in the
buffers, which tee does not show: a packet-mode pipe with bytes in flight
is refused. So is a pipe an end of which a process outside the tree
holds: the restored pipe could not be that process's too.
"""

import ctypes
import errno
import fcntl
import os
import termios

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files.base import FileKindBase, refuse_payload
from runtime.images.model import FdKind, FdSlot, FileEntry, Pipe
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.fds import FileKind, OpenFile, find_holders

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
O_ACCMODE = 0o3
O_DIRECT = 0o40000
# The flags fcntl(F_SETFL) sets on an open file (fs/fcntl.c SETFL_MASK, without O_NOATIME, which a pipe ignores).
SETFL_FLAGS = os.O_APPEND | os.O_NONBLOCK | O_DIRECT | 0o20000  # ... | FASYNC
PIPE_PREFIX = "pipe:["

_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t
SPLICE_F_NONBLOCK = 2


def pipe_id(open_file: OpenFile) -> int:
    return int(open_file.link[len(PIPE_PREFIX):-1])


def is_read_end(entry: FileEntry) -> bool:
    return entry.flags & O_ACCMODE == os.O_RDONLY


class PipeEnd(FileKindBase):
    kind = FdKind.PIPE

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.PIPE and open_file.link.startswith(PIPE_PREFIX)

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        if open_file.flags & O_ACCMODE not in (os.O_RDONLY, os.O_WRONLY):
            raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}): a pipe end open for reading and "
                                 "writing (reopened through /proc with O_RDWR): not supported")
        return FileEntry(file_id, self.kind, flags=open_file.flags, pipe=pipe_id(open_file))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.pipe is None:
            raise ImageError(file, f"{field}.pipe", "a pipe end names its pipe")
        if entry.flags & O_ACCMODE not in (os.O_RDONLY, os.O_WRONLY):
            raise ImageError(file, f"{field}.flags", f"{entry.flags:#o}: a pipe end is open for reading or writing")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        # The end was made with its pipe by the pipe's opener (make) and inherited at its slot.
        raise RestoreError(pid, f"fd {number}: the end of pipe {entry.pipe} was not made with its pipe")

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"pipe:[{entry.pipe}] {'read' if is_read_end(entry) else 'write'} end", ""


KIND = PipeEnd()


# -- the dump: each pipe once ---------------------------------------------------------------------------------

def ends_of(tables: dict[int, tuple[tuple[FdSlot, ...], tuple[FileEntry, ...]]], shared: tuple[FileEntry, ...],
            views: dict[int, int]) -> dict[int, list[tuple[int, int, int, FileEntry]]]:
    """Every pipe end of the tree by pipe: (pid, its live task, the end's first fd there, the entry)."""
    tree_entries = {entry.id: entry for entry in shared}
    ends: dict[int, list[tuple[int, int, int, FileEntry]]] = {}
    for pid, (slots, entries) in tables.items():
        own = {entry.id: entry for entry in entries}
        seen = set()
        for slot in slots:
            entry = own.get(slot.file_id) or tree_entries[slot.file_id]
            if entry.kind is FdKind.PIPE and entry.id not in seen:
                seen.add(entry.id)
                ends.setdefault(entry.pipe, []).append((pid, views[pid], slot.fd, entry))
    return ends


def save(ends: dict[int, list[tuple[int, int, int, FileEntry]]], tree_pids: set[int]) -> tuple[Pipe, ...]:
    """Each pipe of the tree with its capacity and the bytes in it, read without consuming them.

    ends: pipe id -> every (pid, live task, fd, entry) of it in the tree;
    a DumpError for a pipe that is also held outside the tree, or a
    packet-mode pipe with bytes in it.
    """
    outside = find_holders(set(ends), exclude=tree_pids)
    pipes = []
    for pipe_id, held in sorted(ends.items()):
        pid, view, fd, entry = held[0]
        if pipe_id in outside:
            raise DumpError(pid, f"fd {fd} (pipe:[{pipe_id}]): its pipe is also held by pid "
                                 f"{', '.join(str(p) for p in outside[pipe_id])}, outside the dump: not supported "
                                 "yet (dump that process's tree, or use --shell-job for stdio)")
        size, data = _peek(pid, view, fd)
        if data and any(end.flags & O_DIRECT for _, _, _, end in held):
            raise DumpError(pid, f"fd {fd} (pipe:[{pipe_id}]): a packet-mode (O_DIRECT) pipe with {len(data)} "
                                 "bytes in flight: not supported yet")
        pipes.append(Pipe(pipe_id, size, data))
    return tuple(pipes)


def _peek(pid: int, view: int, fd: int) -> tuple[int, bytes]:
    """(capacity, bytes in flight) of the pipe behind fd of view, through a reader of its own."""
    try:
        reader = os.open(f"/proc/{view}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DumpError(pid, f"fd {fd}: cannot open its pipe through /proc: {exc.strerror}") from exc
    try:
        size = fcntl.fcntl(reader, F_GETPIPE_SZ)
        waiting = int.from_bytes(fcntl.ioctl(reader, termios.FIONREAD, b"\0" * 4), "little")
        if not waiting:
            return size, b""
        copy_r, copy_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(copy_w, F_SETPIPE_SZ, size)
            copied = _libc.tee(reader, copy_w, waiting, SPLICE_F_NONBLOCK)
            if copied != waiting:
                err = ctypes.get_errno() if copied < 0 else errno.EAGAIN
                raise DumpError(pid, f"fd {fd}: tee copied {copied} of the {waiting} bytes in its pipe: "
                                     f"{os.strerror(err)}")
            return size, os.read(copy_r, waiting)
        finally:
            os.close(copy_r)
            os.close(copy_w)
    finally:
        os.close(reader)


# -- the restore: each pipe made once, its ends at their slots --------------------------------------------------

def make(pipe: Pipe, ends: list[tuple[FileEntry, int]], pid: int) -> None:
    """The pipe with its capacity and bytes, each end at its slot (inheritable), with its own flags."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            if fcntl.fcntl(write_end, F_GETPIPE_SZ) != pipe.size:
                fcntl.fcntl(write_end, F_SETPIPE_SZ, pipe.size)
        except OSError as exc:
            raise RestoreError(pid, f"pipe:[{pipe.id}]: cannot make its capacity {pipe.size} bytes: "
                                    f"{exc.strerror}") from exc
        if pipe.data and os.write(write_end, pipe.data) != len(pipe.data):
            raise RestoreError(pid, f"pipe:[{pipe.id}]: {len(pipe.data)} bytes do not fit its capacity")
        made = {True: False, False: False}
        for entry, slot in ends:
            reading = is_read_end(entry)
            source = read_end if reading else write_end
            if made[reading]:
                # Another open file of the same end: a new one, as a reopen through /proc made it.
                again = os.open(f"/proc/self/fd/{source}", os.O_RDONLY if reading else os.O_WRONLY)
                os.dup2(again, slot)
                os.close(again)
            else:
                os.dup2(source, slot)
                made[reading] = True
            fcntl.fcntl(slot, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
    finally:
        os.close(read_end)
        os.close(write_end)
