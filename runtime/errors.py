"""The runtime's exception hierarchy: one type per failure domain.

Why one module: the CLI turns any ReviveError into one line and exit status
1, so every failure must arrive as one of these, with the PID, file or field
it concerns already in its message. OS errors are translated at the boundary
that knows the context (the ptrace layer, the /proc readers, the image
loader) with `raise ... from`, never swallowed.
"""

import os


class ReviveError(Exception):
    """Base of every error the runtime reports to its user."""


class PidError(ReviveError):
    """Base of the failures that concern one process or thread: the message starts with its PID."""

    def __init__(self, pid: int, reason: str):
        self.pid = pid
        self.reason = reason
        super().__init__(f"pid {pid}: {reason}")


class ProcessError(PidError):
    """A process cannot be operated on at all: gone, a zombie, not ours to trace."""


class ProcfsError(PidError):
    """A /proc/PID file could not be read, or said something this runtime cannot parse."""


class NoSuchProcess(ProcessError):
    def __init__(self, pid: int, reason: str = "no such process"):
        super().__init__(pid, reason)


class ZombieProcess(ProcessError):
    def __init__(self, pid: int, reason: str = "is a zombie (exited, not yet reaped by its parent)"):
        super().__init__(pid, reason)


class AccessDenied(ProcessError):
    def __init__(self, pid: int, reason: str = "operation not permitted"):
        super().__init__(pid, reason)


class KernelThread(ProcessError):
    def __init__(self, pid: int, reason: str = "is a kernel thread"):
        super().__init__(pid, reason)


class AlreadyTraced(ProcessError):
    def __init__(self, pid: int, tracer: int):
        self.tracer = tracer
        super().__init__(pid, f"already traced by pid {tracer}")


class OwnProcess(ProcessError):
    def __init__(self, pid: int, reason: str = "is the runtime's own process"):
        super().__init__(pid, reason)


class PtraceError(ReviveError):
    """A ptrace request failed: names the request, the task and the errno."""

    def __init__(self, tid: int, request: str, errno: int, detail: str = ""):
        self.tid = tid
        self.request = request
        self.errno = errno
        text = f"pid {tid}: ptrace {request} failed: {os.strerror(errno)}"
        super().__init__(f"{text} ({detail})" if detail else text)


class InfectError(PidError):
    """Putting the parasite in, talking to it, or taking it out failed."""


class DumpError(PidError):
    """A checkpoint cannot be taken: what is not supported (docs/state.md) or what failed."""


class RestoreError(PidError):
    """A restore failed after the image was validated, for the process it was restoring."""


class VdsoError(ReviveError):
    """The dumped vDSO can be neither remapped nor proxied (docs/vdso.md)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"vdso: {reason}")


class ImageError(ReviveError):
    """An image file is missing, truncated, corrupt or inconsistent; names file and field."""

    def __init__(self, file: str, field: str, reason: str):
        self.file = file
        self.field = field
        self.reason = reason
        super().__init__(f"{file}: {field}: {reason}" if field else f"{file}: {reason}")


TEXT_SHOWN_MAX = 80


def shorten(text: str, limit: int = TEXT_SHOWN_MAX) -> str:
    """Text from an image or the system as a message shows it: one line, at most about limit characters.

    A hostile image may hold a 100,000-character path or a newline in a
    name; a message shows the start, escapes what is not printable, and
    says how long the whole was.
    """
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"
