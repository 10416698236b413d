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
import stat
import termios
from dataclasses import replace

from runtime.errors import DumpError, ImageError, RestoreError, shorten
from runtime.files import by_path
from runtime.files.base import (SETFL_FLAGS, FdTable, FileKindBase, held_entries, refuse_payload,
                                require_node_of_type)
from runtime.images.model import FdKind, FileEntry, FileNode, Pipe
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.fds import FileKind, OpenFile, find_holders
from runtime.kernel.procfs.maps import DELETED_SUFFIX

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
O_ACCMODE = 0o3
O_DIRECT = 0o40000
# The flags fcntl(F_SETFL) sets on an open file (fs/fcntl.c SETFL_MASK, without O_NOATIME, which a pipe ignores).
PIPE_PREFIX = "pipe:["
PIPE_KINDS = (FdKind.PIPE, FdKind.FIFO)

_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t
SPLICE_F_NONBLOCK = 2


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
        return FileEntry(file_id, self.kind, flags=open_file.flags, pipe=open_file.inode)

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


class FifoEnd(PipeEnd):
    """An open file of a FIFO: a pipe with a name, whose data is saved as a pipe's; reopened by path."""

    kind = FdKind.FIFO

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.PIPE and open_file.link.startswith("/")

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        if open_file.link.endswith(DELETED_SUFFIX):
            raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}): a deleted FIFO: not supported yet")
        entry = super().dump(pid, open_file, file_id)
        return replace(entry, node=FileNode(open_file.link, open_file.mode), pipe=open_file.inode)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        require_node_of_type(entry, file, field, (stat.S_IFIFO,))
        if entry.pipe is None:
            raise ImageError(file, f"{field}.pipe", "a FIFO's open file names its pipe")
        if entry.flags & O_ACCMODE not in (os.O_RDONLY, os.O_WRONLY):
            raise ImageError(file, f"{field}.flags", f"{entry.flags:#o}: a FIFO is open for reading or writing")

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"{entry.node.path} (FIFO {'read' if is_read_end(entry) else 'write'} end)", f"{entry.node.mode:o}"


FIFO_KIND = FifoEnd()


# -- the dump: each pipe once ---------------------------------------------------------------------------------

def ends_of(tables: dict[int, FdTable], shared: tuple[FileEntry, ...],
            views: dict[int, int]) -> dict[int, list[tuple[int, int, int, FileEntry]]]:
    """Every pipe end of the tree by pipe: (pid, its live task, the end's first fd there, the entry)."""
    ends: dict[int, list[tuple[int, int, int, FileEntry]]] = {}
    for pid, fd, entry in held_entries(tables, shared):
        if entry.kind in PIPE_KINDS:
            ends.setdefault(entry.pipe, []).append((pid, views[pid], fd, entry))
    return ends


def save(ends: dict[int, list[tuple[int, int, int, FileEntry]]], tree_pids: set[int]) -> tuple[Pipe, ...]:
    """Each pipe and FIFO of the tree with its capacity and the bytes in it, read without consuming them.

    ends: pipe id -> every (pid, live task, fd, entry) of it in the tree;
    a DumpError for one that is also held outside the tree (the restored one
    could not be that process's too), or a packet-mode pipe with bytes in it.
    """
    for pipe_id, held in ends.items():
        if len({_link(entry, pipe_id) for _, _, _, entry in held}) > 1:
            pid, _, fd, _ = held[0]
            raise DumpError(pid, f"fd {fd}: pipes or FIFOs of two file systems have one inode number, {pipe_id}: "
                                 "not supported")
    links = {_link(held[0][3], pipe_id): pipe_id for pipe_id, held in ends.items()}
    outside = find_holders(links, exclude=tree_pids)
    pipes = []
    for pipe_id, held in sorted(ends.items()):
        pid, view, fd, entry = held[0]
        what = _link(entry, pipe_id)
        if pipe_id in outside:
            raise DumpError(pid, f"fd {fd} ({what}): it is also held by pid "
                                 f"{', '.join(str(p) for p in outside[pipe_id])}, outside the dump: not supported "
                                 "yet (dump that process's tree, or use --shell-job for stdio)")
        size, data = _peek(pid, view, fd)
        if data and any(end.flags & O_DIRECT for _, _, _, end in held):
            raise DumpError(pid, f"fd {fd} ({what}): a packet-mode (O_DIRECT) pipe with {len(data)} "
                                 "bytes in flight: not supported yet")
        pipes.append(Pipe(pipe_id, size, data, entry.node.path if entry.kind is FdKind.FIFO else None))
    return tuple(pipes)


def _link(entry: FileEntry, pipe_id: int) -> str:
    """What /proc/PID/fd shows for an end of it."""
    return entry.node.path if entry.kind is FdKind.FIFO else f"{PIPE_PREFIX}{pipe_id}]"


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
    """The pipe (or FIFO, opened by path) with its capacity and bytes, each end at its slot with its flags."""
    if pipe.path is None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    else:
        try:
            # O_RDWR: a FIFO opened so never waits for the other side, and holds both until the ends are made.
            read_end = write_end = by_path.open_checked(pipe.path, os.O_RDWR, stat.S_IFIFO)
        except OSError as exc:
            raise RestoreError(pid, f"cannot reopen the FIFO {shorten(pipe.path)}: {exc.strerror}") from exc
    try:
        try:
            if fcntl.fcntl(write_end, F_GETPIPE_SZ) != pipe.size:
                fcntl.fcntl(write_end, F_SETPIPE_SZ, pipe.size)
        except OSError as exc:
            raise RestoreError(pid, f"{pipe.path or f'pipe:[{pipe.id}]'}: cannot make its capacity {pipe.size} "
                                    f"bytes: {exc.strerror}") from exc
        if pipe.data and os.write(write_end, pipe.data) != len(pipe.data):
            raise RestoreError(pid, f"pipe:[{pipe.id}]: {len(pipe.data)} bytes do not fit its capacity")
        made = {True: pipe.path is not None, False: pipe.path is not None}  # a FIFO's every open is its own
        for entry, slot in ends:
            reading = is_read_end(entry)
            source = read_end if reading else write_end
            if made[reading]:
                # Another open file of the same end: a new one, as an open by path or through /proc made it.
                again = os.open(f"/proc/self/fd/{source}", os.O_RDONLY if reading else os.O_WRONLY)
                os.dup2(again, slot)
                os.close(again)
            else:
                os.dup2(source, slot)
                made[reading] = True
            fcntl.fcntl(slot, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
    finally:
        os.close(read_end)
        if write_end != read_end:
            os.close(write_end)
