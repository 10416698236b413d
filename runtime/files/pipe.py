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
which it reads. Packet mode (O_DIRECT) keeps each write in a buffer of its
own flagged as a packet, and a read from such a buffer returns that packet
and no more; tee copies the buffers with their flag, so reading the copy
one read at a time gives the packets back, which the restore writes one
write each through a packet-mode end. (A packet written behind stream bytes
merges with them, as the kernel merges it; a read that returns both is
taken for one packet.)

A pipe an end of which a process outside the tree holds is refused: the
restored pipe could not be that process's too. Unless the user names it,
dump --external pipe:[INODE]: then it is recorded as external, without its
bytes (they are the outside holder's as much as the tree's), and the
restore takes each end the tree held from its caller (--inherit-fd,
files/inherit.py).
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
from runtime.files.inherit import pipe_name
from runtime.files.base import (SETFL_FLAGS, FdTable, FileKindBase, above, held_entries, refuse_payload,
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
PIPE_BUF = 4096  # a packet's most bytes: one page, one buffer


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


def save(ends: dict[int, list[tuple[int, int, int, FileEntry]]], tree_pids: set[int],
         external: frozenset[int] = frozenset()) -> tuple[Pipe, ...]:
    """Each pipe and FIFO of the tree with its capacity and the bytes in it, read without consuming them.

    ends: pipe id -> every (pid, live task, fd, entry) of it in the tree;
    external: the pipes dump --external named, recorded without their bytes.
    A DumpError for one that is also held outside the tree and not named
    (the restored one could not be that process's too), or one named that
    no fd of the tree holds.
    """
    for pipe_id in sorted(external - {pipe_id for pipe_id, held in ends.items() if held[0][3].kind is FdKind.PIPE}):
        raise DumpError(min(tree_pids), f"--external {pipe_name(pipe_id)}: no fd of the tree is an end of that pipe "
                                        "(with --shell-job, a stdio pipe is the caller's already)")
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
        if pipe_id in external:
            pipes.append(Pipe(pipe_id, _capacity(pid, view, fd), external=True))
            continue
        if pipe_id in outside:
            holders = ", ".join(str(p) for p in outside[pipe_id])
            hint = (f"name it with --external {what} and restore with --inherit-fd fd[N]:{what}"
                    if entry.kind is FdKind.PIPE else "a FIFO's other holders cannot be named yet")
            raise DumpError(pid, f"fd {fd} ({what}): it is also held by pid {holders}, outside the dump: {hint} "
                                 "(or dump that process's tree, or use --shell-job for stdio)")
        # Packets are made by writes through a packet-mode write end; O_DIRECT on a read end changes nothing.
        packet_mode = any(end.flags & O_DIRECT and not is_read_end(end) for _, _, _, end in held)
        size, data, packets = _peek(pid, view, fd, packet_mode)
        pipes.append(Pipe(pipe_id, size, data, entry.node.path if entry.kind is FdKind.FIFO else None, packets))
    return tuple(pipes)


def _link(entry: FileEntry, pipe_id: int) -> str:
    """What /proc/PID/fd shows for an end of it."""
    return entry.node.path if entry.kind is FdKind.FIFO else f"{PIPE_PREFIX}{pipe_id}]"


def _reader(pid: int, view: int, fd: int) -> int:
    """A reader of its own of the pipe behind fd of view (a new open file: the tree's flags stay as they are)."""
    try:
        return os.open(f"/proc/{view}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DumpError(pid, f"fd {fd}: cannot open its pipe through /proc: {exc.strerror}") from exc


def _capacity(pid: int, view: int, fd: int) -> int:
    reader = _reader(pid, view, fd)
    try:
        return fcntl.fcntl(reader, F_GETPIPE_SZ)
    finally:
        os.close(reader)


def _peek(pid: int, view: int, fd: int, packet_mode: bool) -> tuple[int, bytes, tuple[int, ...]]:
    """(capacity, bytes in flight, packet lengths) of the pipe behind fd of view, through a reader of its own.

    The packets are the reads the copy gives, one packet buffer each (see the
    module docstring); () for a stream: one read, and no end in packet mode.
    """
    reader = _reader(pid, view, fd)
    try:
        size = fcntl.fcntl(reader, F_GETPIPE_SZ)
        waiting = int.from_bytes(fcntl.ioctl(reader, termios.FIONREAD, b"\0" * 4), "little")
        if not waiting:
            return size, b"", ()
        copy_r, copy_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(copy_w, F_SETPIPE_SZ, size)
            copied = _libc.tee(reader, copy_w, waiting, SPLICE_F_NONBLOCK)
            if copied != waiting:
                err = ctypes.get_errno() if copied < 0 else errno.EAGAIN
                raise DumpError(pid, f"fd {fd}: tee copied {copied} of the {waiting} bytes in its pipe: "
                                     f"{os.strerror(err)}")
            reads = []
            while sum(len(each) for each in reads) < waiting:
                reads.append(os.read(copy_r, waiting))
        finally:
            os.close(copy_r)
            os.close(copy_w)
    finally:
        os.close(reader)
    data = b"".join(reads)
    if len(reads) == 1 and not packet_mode:
        return size, data, ()
    if any(len(each) > PIPE_BUF for each in reads):
        raise DumpError(pid, f"fd {fd}: its pipe holds packets (O_DIRECT) and a run of {max(map(len, reads))} "
                             f"stream bytes, more than one packet holds: not supported")
    return size, data, tuple(len(each) for each in reads)


# -- the restore: each pipe made once, its ends at their slots --------------------------------------------------

def make(pipe: Pipe, ends: list[tuple[FileEntry, int]], pid: int, caller: dict[bool, int] | None = None) -> None:
    """The pipe (or FIFO, opened by path) with its capacity and bytes, each end at its slot with its flags.

    caller: for an external pipe, the restoring caller's descriptor of each
    end the tree holds (reading -> fd, from --inherit-fd): those are put in
    place, and no pipe is made.
    """
    if pipe.external:
        _place_ends(pipe, ends, caller.get(True), caller.get(False), {True: False, False: False})
        return
    if pipe.path is None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    else:
        try:
            # O_RDWR: a FIFO opened so never waits for the other side, and holds both until the ends are made.
            read_end = write_end = by_path.open_checked(pipe.path, os.O_RDWR, stat.S_IFIFO)
        except OSError as exc:
            raise RestoreError(pid, f"cannot reopen the FIFO {shorten(pipe.path)}: {exc.strerror}") from exc
    floor = max(slot for _, slot in ends) + 1
    read_end = above(read_end, floor)
    write_end = read_end if pipe.path is not None else above(write_end, floor)
    try:
        try:
            if fcntl.fcntl(write_end, F_GETPIPE_SZ) != pipe.size:
                fcntl.fcntl(write_end, F_SETPIPE_SZ, pipe.size)
        except OSError as exc:
            raise RestoreError(pid, f"{pipe.path or pipe_name(pipe.id)}: cannot make its capacity {pipe.size} "
                                    f"bytes: {exc.strerror}") from exc
        _write_back(pipe, write_end, pid)
        # A FIFO's every open is its own.
        _place_ends(pipe, ends, read_end, write_end, {True: pipe.path is not None, False: pipe.path is not None})
    finally:
        os.close(read_end)
        if write_end != read_end:
            os.close(write_end)


def _write_back(pipe: Pipe, write_end: int, pid: int) -> None:
    """The bytes in flight into the new pipe: a stream in one write, packets one write each in packet mode."""
    if pipe.packets:
        # The ends' own flags are set after, on each: packet mode here makes each write one packet buffer.
        fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | O_DIRECT)
    chunks, at = [], 0
    for length in pipe.packets or (len(pipe.data),):
        chunks.append(pipe.data[at:at + length])
        at += length
    for chunk in chunks:
        if chunk and os.write(write_end, chunk) != len(chunk):
            raise RestoreError(pid, f"{pipe_name(pipe.id)}: {len(pipe.data)} bytes do not fit its capacity")


def _place_ends(pipe: Pipe, ends: list[tuple[FileEntry, int]], read_end: int | None, write_end: int | None,
                made: dict[bool, bool]) -> None:
    """Each end's entry at its slot, from read_end or write_end, with its flags.

    made: whether an end's first entry must be a new open file too (a FIFO's
    every open is its own), not the descriptor itself.
    """
    for entry, slot in ends:
        reading = is_read_end(entry)
        source = read_end if reading else write_end
        if made[reading]:
            # Another open file of the same end: a new one, as an open by path or through /proc made it.
            again = above(os.open(f"/proc/self/fd/{source}", os.O_RDONLY if reading else os.O_WRONLY),
                          max(slot for _, slot in ends) + 1)
            os.dup2(again, slot)
            os.close(again)
        else:
            os.dup2(source, slot)
            made[reading] = True
        fcntl.fcntl(slot, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
