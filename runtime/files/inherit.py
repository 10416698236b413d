"""Descriptors the restoring caller hands in: --shell-job stdio, and the pipe ends named with --inherit-fd.

Why inherited: the shell that runs the restore owns the terminal (or the
pipeline) the job talks to; the restored process takes the restoring
caller's own fd of that number, as a job started from that shell would.
The same holds for a pipe whose other end a process outside the tree holds
(named at dump with --external pipe:[INODE]): the restored tree cannot make
that process's pipe again, so the caller hands it in as criu's users do,
`restore --inherit-fd fd[N]:pipe:[INODE]`, and its fd N becomes every fd of
the tree that held that end (files/pipe.py puts it in place). A caller's
descriptor that is missing, no pipe, or the wrong end is refused before
anything of the tree is made.
"""

import fcntl
import os
import re
import stat
from dataclasses import dataclass

from runtime.errors import RestoreError
from runtime.files.base import FileKindBase, refuse_payload
from runtime.images.model import FdKind, FileEntry
from runtime.kernel.procfs.fds import FileKind, OpenFile

STDIO_FDS = (0, 1, 2)
_SHELL_KINDS = (FileKind.TTY, FileKind.PIPE)
_EXTERNAL_PIPE = re.compile(r"pipe:\[([0-9]+)\]")
_INHERIT_FD = re.compile(r"fd\[([0-9]+)\]:(pipe:\[[0-9]+\])")


@dataclass(frozen=True)
class InheritFd:
    """restore --inherit-fd fd[N]:pipe:[INODE]: the caller's descriptor N is that dumped pipe's end."""

    fd: int
    pipe: int  # the dumped pipe's inode number

    def __str__(self) -> str:
        return f"fd[{self.fd}]:{pipe_name(self.pipe)}"


def pipe_name(pipe_id: int) -> str:
    return f"pipe:[{pipe_id}]"


def parse_external(text: str) -> int:
    """dump --external pipe:[INODE]: the inode; a ValueError for any other form."""
    match = _EXTERNAL_PIPE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not pipe:[INODE] (the only external the dump takes)")
    return int(match[1])


def parse_inherit_fd(text: str) -> InheritFd:
    """restore --inherit-fd fd[N]:pipe:[INODE]; a ValueError for any other form."""
    match = _INHERIT_FD.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not fd[N]:pipe:[INODE]")
    return InheritFd(int(match[1]), parse_external(match[2]))


def _caller_flags(fd: int, pid: int, what: str) -> tuple[os.stat_result, int]:
    """(stat, status flags) of the caller's descriptor fd, a RestoreError naming what if it is not open."""
    try:
        return os.fstat(fd), fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        raise RestoreError(pid, f"{what}: fd {fd} is not open in this restore's caller") from None


def caller_pipe_end(given: tuple[InheritFd, ...], pipe_id: int, reading: bool, pid: int, fd: int) -> int:
    """The caller's descriptor --inherit-fd gives as the read (or write) end of the dumped pipe pipe_id.

    pid, fd: a holder of that end in the image, for the message. A
    RestoreError if no --inherit-fd names the pipe, or none of those that do
    is a pipe open for that end's direction.
    """
    end = "read" if reading else "write"
    named = [each for each in given if each.pipe == pipe_id]
    if not named:
        raise RestoreError(pid, f"fd {fd} is the {end} end of {pipe_name(pipe_id)}, which was outside the dump "
                                f"(dump --external): give this restore that end with --inherit-fd "
                                f"fd[N]:{pipe_name(pipe_id)}")
    for each in named:
        status, flags = _caller_flags(each.fd, pid, f"--inherit-fd {each}")
        if not stat.S_ISFIFO(status.st_mode):
            raise RestoreError(pid, f"--inherit-fd {each}: fd {each.fd} is no pipe")
        mode = flags & os.O_ACCMODE
        if mode == os.O_RDWR or (mode == os.O_RDONLY) == reading:
            return each.fd
    raise RestoreError(pid, f"fd {fd} is the {end} end of {pipe_name(pipe_id)}: "
                            f"--inherit-fd {', '.join(str(each) for each in named)} gives no {end} end")


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
        _caller_flags(number, pid, "--shell-job")  # the caller's descriptor, left open by close_other_fds
        return number

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return "(the restoring caller's)", ""


KIND = Inherited()
