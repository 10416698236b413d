"""The contract every kind of open file implements: recognise, dump, check, reopen, describe.

Why a base class: the dump, the image checks, the restoring child and `show`
each reach a kind only through these five methods (registry.py picks the
kind), so a kind is complete when its module implements them and nothing
outside files/ names it. docs/architecture.md, "files/: the contract", says
who calls each and when.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import socket
import stat

from runtime.errors import ImageError
from collections.abc import Callable, Iterator

from runtime.images.model import FdKind, FdSlot, FileEntry
from runtime.kernel.procfs.fds import OpenFile

SO_PEEK_OFF = 42  # asm-generic/socket.h


class FileKindBase(abc.ABC):
    """One kind of open file description; a module defines one subclass and one instance of it."""

    kind: FdKind  # what the image records in FileEntry.kind
    # May be one open file of several processes (made by their common ancestor before their own fds exist).
    shareable: bool = True

    @abc.abstractmethod
    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        """This kind dumps open_file (the first kind in registry.KINDS that matches does)."""

    def refusal_hint(self, open_file: OpenFile) -> str:
        """When no kind matches: what would have made this kind take open_file (" (with ...)"), or ""."""
        return ""

    @abc.abstractmethod
    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        """The entry a restore reopens (runs with pid stopped); a DumpError naming the fd if it cannot be."""

    @abc.abstractmethod
    def check(self, entry: FileEntry, file: str, field: str) -> None:
        """An ImageError naming file and field (e.g. "files[2]") if entry is not one this kind restores."""

    @abc.abstractmethod
    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        """entry opened as fd number in the restoring child (with the image's fs identity): number.

        A RestoreError naming the dumped pid and the fd if it cannot be.
        """

    def open_order(self, entry: FileEntry, entry_at: Callable[[int], FileEntry | None]) -> int:
        """When entry is opened among the process's fds, lowest first: 0 for a kind that names no other fd.

        entry_at(fd): the entry the process holds at fd, None if none. A kind
        that names other fds (epoll) comes after the entries it names.
        """
        return 0

    @abc.abstractmethod
    def describe(self, entry: FileEntry) -> tuple[str, str]:
        """(what, mode) for `show`: the path or what stands for it, and the file's mode or ""."""


# The flags fcntl(F_SETFL) sets on an open file (fs/fcntl.c SETFL_MASK): O_APPEND, O_NONBLOCK, O_DIRECT,
# FASYNC; O_NOATIME, the last, a made file never had.
SETFL_FLAGS = os.O_APPEND | os.O_NONBLOCK | 0o40000 | 0o20000

FdTable = tuple[tuple[FdSlot, ...], tuple[FileEntry, ...]]


def held_entries(tables: dict[int, FdTable], shared: tuple[FileEntry, ...]) -> Iterator[tuple[int, int, FileEntry]]:
    """(pid, its first fd of it, entry) for each entry each process holds, its own or one of the tree's shared."""
    tree_entries = {entry.id: entry for entry in shared}
    for pid, (slots, entries) in tables.items():
        own = {entry.id: entry for entry in entries}
        seen = set()
        for slot in slots:
            if slot.file_id not in seen:
                seen.add(slot.file_id)
                yield pid, slot.fd, own.get(slot.file_id) or tree_entries[slot.file_id]


def place(fd: int, number: int, inheritable: bool) -> int:
    """A freshly made descriptor moved to number (dup3 refuses to move one onto itself): number."""
    if fd == number:
        os.set_inheritable(fd, inheritable)
    else:
        os.dup2(fd, number, inheritable=inheritable)
        os.close(fd)
    return number


@contextlib.contextmanager
def peeking(sock: socket.socket) -> Iterator[None]:
    """The socket's peek offset at the head of its receive queue while the block peeks at it, set back after.

    Why: with SO_PEEK_OFF set, each MSG_PEEK starts where the last one
    ended, so a queue is read message by message without consuming it (the
    kind's copy of the socket is the process's own: its queue must be left
    as it was).
    """
    before = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    try:
        yield
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, before)


def peek_next(sock: socket.socket, size: int, ancillary_size: int = 0) -> tuple | None:
    """The next message of the queue (recvmsg's data, ancillary, flags, address) inside peeking; None at its end."""
    try:
        return sock.recvmsg(size, ancillary_size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def above(fd: int, floor: int) -> int:
    """fd moved to the lowest free number at or above floor (close-on-exec): the new number.

    Why: a maker's new descriptors take the lowest free numbers, and once a
    member's numbers below the tree-wide slots are used up those are slots
    not filled yet; a dup2 onto one would close the maker's own descriptor.
    Above every slot it fills, a temporary descriptor is safe.
    """
    if fd >= floor:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    os.close(fd)
    return moved


def refuse_payload(entry: FileEntry, file: str, field: str, expected: bool) -> None:
    """An ImageError if entry has a node and expected is False, or has none and expected is True."""
    if (entry.node is not None) != expected:
        need = "needs a path" if expected else "has no path"
        raise ImageError(file, f"{field}.node", f"a file of kind {entry.kind.value} {need}")


def require_node_of_type(entry: FileEntry, file: str, field: str, file_types: tuple[int, ...]) -> None:
    """An ImageError unless entry has a node whose mode is one of file_types (stat.S_IFREG, ...).

    The restore opens the path only if it is a file of the recorded type now
    (by_path.open_at), so the recorded type is what decides what may be opened.
    """
    refuse_payload(entry, file, field, expected=True)
    if stat.S_IFMT(entry.node.mode) not in file_types:
        raise ImageError(file, f"{field}.node.mode", f"{entry.node.mode:#o} is not the mode of a file a "
                                                     f"{entry.kind.value} descriptor reopens")
