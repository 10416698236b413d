"""A process's fd table: fd slots pointing at file entries, and which slots share one open file.

Why apart from the kinds: sharing is the kernel's, not a kind's. Two fds
are one open file description after dup() or fork() whatever the file is
(kcmp(KCMP_FILE) says so at dump), and a restore must make them one again
(dup2 of the first slot), or their offset and flags would part. Processes
of a tree share entries the same way (a fork's child holds its parent's
open files): such an entry is the tree's (Tree.files), opened once at
restore by the nearest common ancestor of its holders before it creates
them, so that each inherits it (runtime/restore/spawn.py).
"""

import os

from runtime.errors import DumpError, ImageError
from runtime.files import registry, regular
from runtime.files.base import FdTable
from dataclasses import replace

from runtime.images.model import FdKind, FdSlot, FileEntry, LockKind, Process
from runtime.kernel import kcmp
from runtime.kernel.procfs.fds import OpenFile, fdinfo_fields


def dump_table(pid: int, open_files: tuple[OpenFile, ...], shell_job: bool, first_id: int = 1,
               view: int | None = None) -> tuple[tuple[FdSlot, ...], tuple[FileEntry, ...]]:
    """(slots, entries) of pid's open files, in fd order; an fd that shares an earlier one's file reuses its entry.

    view: the live task kcmp compares in (default pid; another thread once the leader has exited).
    """
    view = pid if view is None else view
    slots: list[FdSlot] = []
    entries: list[FileEntry] = []
    # What two fds of one open file read alike -> (file_id, its lowest fd) of each entry so far: kcmp's answer
    # is an equivalence, so one compare per entry, and only against entries that could be the same file
    # (a thousand eventfds would otherwise cost half a million kcmp calls).
    alike: dict[tuple, list[tuple[int, int]]] = {}
    for f in open_files:
        group = alike.setdefault(_identity(f), [])
        shared = next((file_id for file_id, fd in group if kcmp.same_file(view, fd, f.fd)), None)
        if shared is None:
            entries.append(registry.dump(pid, f, first_id + len(entries), shell_job))
            shared = entries[-1].id
            group.append((shared, f.fd))
        slots.append(FdSlot(f.fd, shared, f.cloexec))
    return tuple(slots), tuple(entries)


def _identity(f: OpenFile) -> tuple:
    """What never differs between two fds of one open file: the file and its mount, and an eventfd's own id.

    Only what cannot change: a timerfd's time left, an offset another
    process moves, or an interest list changed meanwhile would split one
    open file in two.
    """
    fields = fdinfo_fields(f.fdinfo)
    return f.link, f.inode, fields.get("mnt_id"), fields.get("eventfd-id")


def share_across(tables: dict[int, FdTable], views: dict[int, int]) -> tuple[dict[int, FdTable], tuple[FileEntry, ...]]:
    """The processes' tables with each open file held by several processes made one entry, and those entries.

    tables: each process's (slots, entries) from dump_table, ids unique across
    them; views: the live task of each process that kcmp compares in. Only
    entries that could be one (same kind, flags, offset and file) are compared;
    a --shell-job's stdio (INHERIT) is the restoring caller's in every process
    anyway. The shared entry keeps the id its first holder gave it.
    """
    first_fd = {pid: {slot.file_id: slot.fd for slot in reversed(slots)} for pid, (slots, _) in tables.items()}
    candidates: dict[tuple, list[tuple[int, FileEntry]]] = {}  # what an entry must equal -> (holder, entry)
    same_as: dict[int, int] = {}  # file_id -> the id of the entry it is one with
    shared: dict[int, FileEntry] = {}
    for pid, (_, entries) in tables.items():
        for entry in entries:
            if entry.kind is FdKind.INHERIT:
                continue
            # An open file shared by two processes is one: its kind's payload is the same in both.
            group = candidates.setdefault((entry.kind, entry.flags, entry.pos, entry.node, entry.pipe, entry.socket,
                                           entry.eventfd, entry.epoll, entry.timerfd, entry.signalfd, entry.shmem,
                                           entry.inotify), [])
            match = next(((holder, held) for holder, held in group if holder != pid and kcmp.same_file(
                views[pid], first_fd[pid][entry.id], first_fd[holder][held.id], pid2=views[holder])), None)
            if match is None:
                group.append((pid, entry))
                continue
            holder, held = match
            if not registry.kind_of(entry).shareable:
                raise DumpError(pid, f"fd {first_fd[pid][entry.id]} ({entry.kind.value}): one open file with process "
                                     f"{holder}'s fd {first_fd[holder][held.id]}: not supported yet")
            same_as[entry.id] = held.id
            # Each process sees its own POSIX locks on the file: the shared entry holds them all.
            merged = replace(held, locks=held.locks + tuple(lock for lock in entry.locks if lock not in held.locks))
            group[group.index(match)] = (holder, merged)
            shared[held.id] = merged
    result = {}
    for pid, (slots, entries) in tables.items():
        slots = tuple(replace(slot, file_id=same_as.get(slot.file_id, slot.file_id)) for slot in slots)
        result[pid] = (slots, tuple(e for e in entries if e.id not in same_as and e.id not in shared))
    return result, tuple(sorted(shared.values(), key=lambda entry: entry.id))


def entries_by_id(process: Process, shared: tuple[FileEntry, ...] = ()) -> dict[int, FileEntry]:
    """The entries the process's slots may point at: its own, and the tree's shared ones."""
    return {entry.id: entry for entry in process.files + shared}


def check(entries: tuple[FileEntry, ...], file: str) -> None:
    """Each entry's kind's checks, named files[i] as the image (a process record, or the tree) has them."""
    for index, entry in enumerate(entries):
        registry.check(entry, file, f"files[{index}]")


def check_open_order(process: Process, shared: tuple[FileEntry, ...], file: str) -> None:
    """An ImageError if the slots name an order no restore can open them in (epoll instances in a loop)."""
    try:
        _opening_order(process, entries_by_id(process, shared))
    except ValueError as exc:
        raise ImageError(file, "fds", str(exc)) from None


def _opening_order(process: Process, entries: dict[int, FileEntry]) -> list[FdSlot]:
    """The slots in the order restore_table opens them: each kind's open_order, lowest first, then by fd."""
    at_fd = {slot.fd: entries[slot.file_id] for slot in process.fds}
    return sorted(process.fds, key=lambda s: registry.kind_of(entries[s.file_id]).open_order(entries[s.file_id],
                                                                                             at_fd.get))


def inherited_fds(process: Process) -> list[int]:
    """The fd numbers a --shell-job restore takes from its caller (never a tree's shared entry)."""
    entries = entries_by_id(process)
    return [s.fd for s in process.fds if s.file_id in entries and entries[s.file_id].kind is FdKind.INHERIT]


def restore_table(process: Process, shared: dict[int, int], shared_entries: tuple[FileEntry, ...]) -> None:
    """Every slot opened at its number in the restoring child; an entry opened once, then dup'ed.

    shared: the descriptor each of the tree's shared entries this process
    holds was inherited at (file_id -> fd): it is dup'ed, never reopened.
    A kind that names other fds (epoll) comes after what it names.
    """
    entries = entries_by_id(process, shared_entries)
    opened: dict[int, int] = dict(shared)  # file_id -> the fd it was opened at first
    for slot in _opening_order(process, entries):
        if slot.file_id in opened:
            # One open file description under two numbers: a dup shares its offset and flags.
            os.dup2(opened[slot.file_id], slot.fd, inheritable=not slot.cloexec)
            continue
        opened[slot.file_id] = registry.open(entries[slot.file_id], slot.fd, not slot.cloexec, process.pid)
    # The tree-wide slots are copies now: closed before any POSIX lock is taken, as closing any descriptor of
    # a file drops the process's POSIX locks on it.
    for fd in shared.values():
        os.close(fd)
    opened = {file_id: fd for file_id, fd in opened.items() if file_id not in shared} | {
        slot.file_id: slot.fd for slot in process.fds if slot.file_id in shared}
    # A POSIX lock is the process's own: taken by it, once its descriptors are back.
    for file_id, fd in opened.items():
        for lock in entries[file_id].locks if file_id in entries else ():
            if lock.kind is LockKind.POSIX and lock.pid == process.pid:
                regular.take_lock(lock, fd, process.pid)


def open_shared(entry: FileEntry, fd: int, pid: int) -> int:
    """One of the tree's shared entries opened at fd (inheritable: the holders are created after)."""
    return registry.open(entry, fd, True, pid)


def describe_rows(process: Process, shared: tuple[FileEntry, ...] = ()) -> list[tuple[str, ...]]:
    """show's rows: fd, file id, kind, what, flags, pos, mode, cloexec."""
    entries = entries_by_id(process, shared)
    rows = []
    for slot in process.fds:
        entry = entries[slot.file_id]
        what, mode = registry.describe(entry)
        rows.append((str(slot.fd), str(entry.id), entry.kind.value, what, f"{entry.flags:#o}", str(entry.pos), mode,
                     "yes" if slot.cloexec else ""))
    return rows
