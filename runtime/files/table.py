"""A process's fd table: fd slots pointing at file entries, and which slots share one open file.

Why apart from the kinds: sharing is the kernel's, not a kind's. Two fds
are one open file description after dup() or fork() whatever the file is
(kcmp(KCMP_FILE) says so at dump), and a restore must make them one again
(dup2 of the first slot), or their offset and flags would part. Later,
process trees share entries between processes the same way (ids are unique
in the image for that).
"""

import os

from runtime.files import registry
from runtime.images.model import FdKind, FdSlot, FileEntry, Process
from runtime.kernel import kcmp
from runtime.kernel.procfs.fds import OpenFile


def dump_table(pid: int, open_files: tuple[OpenFile, ...], shell_job: bool, first_id: int = 1,
               view: int | None = None) -> tuple[tuple[FdSlot, ...], tuple[FileEntry, ...]]:
    """(slots, entries) of pid's open files, in fd order; an fd that shares an earlier one's file reuses its entry.

    view: the live task kcmp compares in (default pid; another thread once the leader has exited).
    """
    view = pid if view is None else view
    slots: list[FdSlot] = []
    entries: list[FileEntry] = []
    first_fd: dict[int, int] = {}  # file_id -> its lowest fd: kcmp's answer is an equivalence, one compare each
    for f in open_files:
        shared = next((file_id for file_id, fd in first_fd.items() if kcmp.same_file(view, fd, f.fd)), None)
        if shared is None:
            entries.append(registry.dump(pid, f, first_id + len(entries), shell_job))
            shared = entries[-1].id
            first_fd[shared] = f.fd
        slots.append(FdSlot(f.fd, shared, f.cloexec))
    return tuple(slots), tuple(entries)


def entries_by_id(process: Process) -> dict[int, FileEntry]:
    return {entry.id: entry for entry in process.files}


def check(process: Process, file: str) -> None:
    """Each entry's kind's checks, named files[i] as the image has them."""
    for index, entry in enumerate(process.files):
        registry.check(entry, file, f"files[{index}]")


def inherited_fds(process: Process) -> list[int]:
    """The fd numbers a --shell-job restore takes from its caller."""
    entries = entries_by_id(process)
    return [s.fd for s in process.fds if entries[s.file_id].kind is FdKind.INHERIT]


def restore_table(process: Process) -> None:
    """Every slot opened at its number in the restoring child; a shared entry opened once, then dup'ed."""
    entries = entries_by_id(process)
    opened: dict[int, int] = {}  # file_id -> the fd it was opened at first
    for slot in process.fds:
        if slot.file_id in opened:
            # One open file description under two numbers: a dup shares its offset and flags.
            os.dup2(opened[slot.file_id], slot.fd, inheritable=not slot.cloexec)
            continue
        opened[slot.file_id] = registry.open(entries[slot.file_id], slot.fd, not slot.cloexec, process.pid)


def describe_rows(process: Process) -> list[tuple[str, ...]]:
    """show's rows: fd, file id, kind, what, flags, pos, mode, cloexec."""
    entries = entries_by_id(process)
    rows = []
    for slot in process.fds:
        entry = entries[slot.file_id]
        what, mode = registry.describe(entry)
        rows.append((str(slot.fd), str(entry.id), entry.kind.value, what, f"{entry.flags:#o}", str(entry.pos), mode,
                     "yes" if slot.cloexec else ""))
    return rows
