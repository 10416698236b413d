"""--shell-job stdio: a terminal or pipe on fd 0-2 that belongs to the caller's shell, inherited on restore.

Why inherited: the shell that runs the restore owns the terminal (or the
pipeline) the job talks to; the restored process takes the restoring
caller's own fd of that number, as a job started from that shell would.
"""

import os

from runtime.errors import RestoreError
from runtime.files.base import FileKindBase, refuse_payload
from runtime.images.model import FdKind, FileEntry
from runtime.kernel.procfs.fds import FileKind, OpenFile

STDIO_FDS = (0, 1, 2)
_SHELL_KINDS = (FileKind.TTY, FileKind.PIPE)


class Inherited(FileKindBase):
    kind = FdKind.INHERIT

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return shell_job and open_file.kind in _SHELL_KINDS and open_file.fd in STDIO_FDS

    def refusal_hint(self, open_file: OpenFile) -> str:
        if open_file.kind in _SHELL_KINDS and open_file.fd in STDIO_FDS:
            return " (with --shell-job, stdio terminals and pipes are taken as the restoring caller's)"
        return ""

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        return FileEntry(file_id, self.kind, flags=open_file.flags)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        try:
            os.fstat(number)  # the caller's descriptor, left open by close_other_fds
        except OSError:
            raise RestoreError(pid, f"fd {number}: the shell job's descriptor is not open in the caller") from None
        return number

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return "(the restoring caller's)", ""


KIND = Inherited()
