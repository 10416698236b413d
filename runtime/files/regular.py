"""Regular files and directories: reopened by path, with their open flags, at their offset.

Why by path: a file with a name is found again by it; a deleted one
(nlink 0, or the kernel's " (deleted)" suffix) has none, so the dump refuses it.
"""

import stat

from runtime.errors import DumpError
from runtime.files.base import FileKindBase, require_node_of_type
from runtime.files.by_path import reopen_entry
from runtime.images.model import FdKind, FileEntry, FileNode
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
        return FileEntry(file_id, self.kind, f.flags, f.pos, FileNode(f.link, f.mode))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        require_node_of_type(entry, file, field, (stat.S_IFREG, stat.S_IFDIR))

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        return reopen_entry(entry, number, inheritable, pid, seek=True)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return entry.node.path, f"{entry.node.mode:#o}"


KIND = Regular()
