"""Regular files and directories: reopened by path, with their open flags, at their offset, and their locks.

Why by path: a file with a name is found again by it; a deleted one
(nlink 0, or the kernel's " (deleted)" suffix) has none (files/unlinked.py
keeps its contents instead).

The locks it holds (fdinfo's "lock:" lines: flock, POSIX and OFD locks,
advisory) are taken again, without waiting, before the process runs: a lock
another process took in the meantime fails the restore, naming it, rather
than leave two holders. flock and OFD locks belong to the open file and are
taken where it is reopened; a POSIX lock belongs to a process and is taken
by that process once its descriptors are back (table.restore_table).
A lock being waited for is the waiter's syscall, which restarts.
"""

import fcntl
import os
import re
import stat
import struct

from runtime.errors import DumpError, RestoreError
from runtime.files.base import FileKindBase, require_node_of_type
from runtime.files.by_path import reopen_entry
from runtime.images.model import FdKind, FileEntry, FileLock, FileNode, LockKind
from runtime.kernel.procfs.fds import FileKind, OpenFile
from runtime.kernel.procfs.maps import DELETED_SUFFIX


class Regular(FileKindBase):
    kind = FdKind.FILE

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind in (FileKind.REGULAR, FileKind.DIRECTORY)

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        f = open_file
        if f.nlink == 0 or f.link.endswith(DELETED_SUFFIX) or not f.link.startswith("/"):
            raise DumpError(pid, f"fd {f.fd} ({f.description}): a deleted file cannot be reopened: "
                                 "not supported yet")
        return FileEntry(file_id, self.kind, f.flags, f.pos, FileNode(f.link, f.mode),
                         locks=tuple(parse_lock(pid, f, line) for line in f.locks if "->" not in line))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        require_node_of_type(entry, file, field, (stat.S_IFREG, stat.S_IFDIR))

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        reopen_entry(entry, number, inheritable, pid, seek=True)
        for lock in entry.locks:
            if lock.kind is not LockKind.POSIX:
                take_lock(lock, number, pid)
        return number

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return entry.node.path, f"{entry.node.mode:#o}"


KIND = Regular()

# fs/locks.c lock_get_status: "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF".
_LOCK = re.compile(r"\d+:\s+(FLOCK|POSIX|OFDLCK)\s+ADVISORY\s+(READ|WRITE)\s+(-?\d+)\s+\S+\s+(\d+)\s+(\d+|EOF)")
_KINDS = {"FLOCK": LockKind.FLOCK, "POSIX": LockKind.POSIX, "OFDLCK": LockKind.OFD}
F_OFD_SETLK = 37


def parse_lock(pid: int, open_file: OpenFile, line: str) -> FileLock:
    match = _LOCK.match(line)
    if match is None:
        raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}) holds a lock this runtime does not "
                             f"restore ({line}): not supported yet")
    kind, mode, owner, start, end = match.groups()
    return FileLock(_KINDS[kind], mode == "WRITE", int(start), 0 if end == "EOF" else int(end) - int(start) + 1,
                    int(owner) if kind == "POSIX" else 0)


def take_lock(lock: FileLock, fd: int, pid: int) -> None:
    """The lock taken again on fd, without waiting; RestoreError if another process holds it now."""
    try:
        if lock.kind is LockKind.FLOCK:
            fcntl.flock(fd, (fcntl.LOCK_EX if lock.write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return
        request = struct.pack("hhqqi", fcntl.F_WRLCK if lock.write else fcntl.F_RDLCK, os.SEEK_SET, lock.start,
                              lock.length, 0)
        fcntl.fcntl(fd, F_OFD_SETLK if lock.kind is LockKind.OFD else fcntl.F_SETLK, request)
    except OSError as exc:
        raise RestoreError(pid, f"fd {fd}: cannot take its {lock.kind.value} lock again: {exc.strerror} (another "
                                "process took it since the dump)") from exc
