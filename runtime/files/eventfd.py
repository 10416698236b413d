"""eventfd(2): a counter the kernel keeps, made again with its count and semaphore mode.

Why fdinfo: the counter is readable only by reading it, which would reset
it (or take one, in semaphore mode); /proc/PID/fdinfo prints it without
touching it (eventfd-count, and eventfd-semaphore since Linux 6.7).
"""

import os

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files.base import FileKindBase, place, refuse_payload
from runtime.images.model import Eventfd, FdKind, FileEntry
from runtime.kernel.procfs.fds import FileKind, OpenFile, fdinfo_fields

LINK = "anon_inode:[eventfd]"
COUNT_MAX = (1 << 64) - 2  # ULLONG_MAX - 1: the most a counter holds
EFD_SEMAPHORE = 1


class EventCounter(FileKindBase):
    kind = FdKind.EVENTFD

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.ANON_INODE and open_file.link == LINK

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        fields = fdinfo_fields(open_file.fdinfo)
        if "eventfd-semaphore" not in fields:
            raise DumpError(pid, f"fd {open_file.fd} ({open_file.description}): this kernel's fdinfo does not say "
                                 "whether it is a semaphore (Linux 6.7 does): not supported")
        state = Eventfd(int(fields["eventfd-count"], 16), fields["eventfd-semaphore"] == "1")
        return FileEntry(file_id, self.kind, flags=open_file.flags, eventfd=state)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.eventfd is None:
            raise ImageError(file, f"{field}.eventfd", "an eventfd needs its state")
        if entry.eventfd.count > COUNT_MAX:
            raise ImageError(file, f"{field}.eventfd.count", f"{entry.eventfd.count} is more than a counter holds")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        flags = (EFD_SEMAPHORE if entry.eventfd.semaphore else 0) | (entry.flags & os.O_NONBLOCK) | os.EFD_CLOEXEC
        try:
            # eventfd() takes an unsigned int: a larger count is written after.
            made = os.eventfd(0, flags)
            if entry.eventfd.count:
                os.eventfd_write(made, entry.eventfd.count)
        except OSError as exc:
            raise RestoreError(pid, f"fd {number}: eventfd: {exc.strerror}") from exc
        return place(made, number, inheritable)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        mode = " semaphore" if entry.eventfd.semaphore else ""
        return f"eventfd count {entry.eventfd.count}{mode}", ""


KIND = EventCounter()
