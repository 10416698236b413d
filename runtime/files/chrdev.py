"""Memory character devices (/dev/null, /dev/zero, /dev/urandom, ...: major 1), reopened by path.

Why only these: opening any other device acts on hardware or a terminal
(a serial line waits for its carrier, /dev/ptmx allocates a terminal), and a
memory device holds no state an open would lose, so no offset is restored.
"""

import os
import stat

from runtime.files.base import FileKindBase, require_node_of_type
from runtime.files.by_path import reopen_entry
from runtime.images.model import FdKind, FileEntry, FileNode
from runtime.kernel.procfs.fds import MEM_MAJOR, FileKind, OpenFile


class MemoryDevice(FileKindBase):
    kind = FdKind.CHR

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.CHAR and os.major(open_file.rdev) == MEM_MAJOR

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        f = open_file
        return FileEntry(file_id, self.kind, f.flags, f.pos, FileNode(f.link, f.mode))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        require_node_of_type(entry, file, field, (stat.S_IFCHR,))

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        # by_path.open_at checks the major again: the image may name any device.
        return reopen_entry(entry, number, inheritable, pid, seek=False)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return entry.node.path, f"{entry.node.mode:#o}"


KIND = MemoryDevice()
