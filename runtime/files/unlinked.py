"""memfds and deleted files: each one of the tree's shared memory objects, each open file of it an entry.

Why the memfd is an object and not a file: it has no name to reopen by
(/memfd:NAME (deleted)), and a process often maps it too; a mapping and an
fd of one memfd must come back as one object. So its data, size and seals
are saved once, as mm/shmem.py saves shared memory (the dump reads it
through the fd's /proc link), the runtime makes it again with
memfd_create, and each open file of it is made by the nearest common
ancestor of its holders, reopened through /proc/self/fd with its own flags
and offset.

A regular file deleted while open is the same: no name reaches it any more.
Its contents are saved (up to the dump's --ghost-limit, beyond which it is
refused), it is made again at its name (or beside it, if a file of that name
exists now) and unlinked at once, so the process holds a deleted file with
the same contents, size and mode.
"""

import fcntl
import os

from runtime.errors import ImageError, RestoreError
from runtime.files.base import SETFL_FLAGS, FdTable, FileKindBase, held_entries, refuse_payload
from runtime.images.model import FdKind, FileEntry
from runtime.kernel.procfs.fds import FileKind, OpenFile
from runtime.kernel.procfs.maps import DELETED_SUFFIX
from runtime.mm.shmem import MEMFD_PREFIX, Reach

O_ACCMODE = 0o3


class MemfdFile(FileKindBase):
    kind = FdKind.MEMFD

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.REGULAR and open_file.link.startswith(MEMFD_PREFIX) and not open_file.nlink

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        return FileEntry(file_id, self.kind, flags=open_file.flags, pos=open_file.pos, shmem=open_file.inode)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.shmem is None:
            raise ImageError(file, f"{field}.shmem", "a memfd's open file names its memfd")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        raise RestoreError(pid, f"fd {number}: memfd {entry.shmem} was not made with its object")

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"memfd (shared memory {entry.shmem})", ""


MEMFD_KIND = MemfdFile()


class DeletedFile(MemfdFile):
    """An open file of a regular file since deleted: its contents saved like a memfd's (up to --ghost-limit)."""

    kind = FdKind.DELETED

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return (open_file.kind is FileKind.REGULAR and not open_file.nlink and open_file.link.startswith("/")
                and open_file.link.endswith(DELETED_SUFFIX) and not open_file.link.startswith(MEMFD_PREFIX))

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        raise RestoreError(pid, f"fd {number}: deleted file {entry.shmem} was not made with its contents")

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"deleted file (shared memory {entry.shmem})", ""


DELETED_KIND = DeletedFile()
UNLINKED_KINDS = (FdKind.MEMFD, FdKind.DELETED)


def reaches(tables: dict[int, FdTable], shared: tuple[FileEntry, ...], views: dict[int, int]) -> dict[int, Reach]:
    """Each memfd or deleted file an fd of the tree holds: where the dump reads it (the fd's /proc link)."""
    found: dict[int, Reach] = {}
    for pid, fd, entry in held_entries(tables, shared):
        if entry.kind in UNLINKED_KINDS and entry.shmem not in found:
            through = f"/proc/{views[pid]}/fd/{fd}"
            found[entry.shmem] = Reach(pid, through, os.readlink(through))
    return found


def make(entry: FileEntry, slot: int, file: int, pid: int) -> None:
    """An open file of the memfd or deleted file (the runtime's descriptor file) at slot, with its flags and offset."""
    try:
        made = os.open(f"/proc/self/fd/{file}", entry.flags & (O_ACCMODE | os.O_APPEND) | os.O_CLOEXEC)
        os.lseek(made, entry.pos, os.SEEK_SET)
        os.dup2(made, slot)
        os.close(made)
        fcntl.fcntl(slot, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
    except OSError as exc:
        raise RestoreError(pid, f"{entry.kind.value} file {entry.shmem}: {exc.strerror}") from exc
