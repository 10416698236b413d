"""The one dispatch from an open file or a file entry to the kind that handles it.

Why an ordered tuple: the first kind whose `matches` accepts an open file
dumps it (inherit comes first: with --shell-job a stdio pipe is the caller's,
not a pipe to dump; the unlinked kinds come before regular: a deleted
regular file is theirs), and an image's FdKind names exactly one kind. A new
kind is one entry here.
"""

from runtime.errors import DumpError
from runtime.files import chrdev, epoll, eventfd, inet, inherit, inotify, pipe, regular, timers, unix, unlinked
from runtime.files.base import FileKindBase
from runtime.images.model import FileEntry
from runtime.kernel.procfs.fds import OpenFile

KINDS: tuple[FileKindBase, ...] = (
    inherit.KIND, unlinked.MEMFD_KIND, unlinked.DELETED_KIND, regular.KIND, chrdev.KIND, pipe.KIND, pipe.FIFO_KIND,
    unix.KIND, inet.KIND, eventfd.KIND, epoll.KIND, timers.TIMER_KIND, timers.SIGNAL_KIND, inotify.KIND,
)

_BY_KIND = {k.kind: k for k in KINDS}


def dump(pid: int, open_file: OpenFile, file_id: int, shell_job: bool) -> FileEntry:
    """The entry of the kind that takes open_file, or a DumpError naming the fd and what it is."""
    for kind in KINDS:
        if kind.matches(open_file, shell_job):
            return kind.dump(pid, open_file, file_id)
    hint = "".join(kind.refusal_hint(open_file) for kind in KINDS)
    raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}): not supported yet{hint}")


def kind_of(entry: FileEntry) -> FileKindBase:
    # Every FdKind has its module (tests/test_files_table.py), and the codec decoded kind as an FdKind.
    return _BY_KIND[entry.kind]


def check(entry: FileEntry, file: str, field: str) -> None:
    """The entry's kind's own checks (the codec and images/checks.py did the shared ones)."""
    kind_of(entry).check(entry, file, field)


def open(entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:  # noqa: A001 (the contract's name)
    return kind_of(entry).open(entry, number, inheritable, pid)


def describe(entry: FileEntry) -> tuple[str, str]:
    return kind_of(entry).describe(entry)
