"""Opening /proc/PID/* with OS errors translated into process errors naming the PID.

Why: a process can exit between two reads, and /proc answers that with
ENOENT or ESRCH depending on the file; the callers want one NoSuchProcess (or
AccessDenied) carrying the PID, not a bare OSError.
"""

import contextlib
import errno
import os
from collections.abc import Iterator

from runtime.errors import AccessDenied, NoSuchProcess


def proc_path(pid: int, name: str) -> str:
    return f"/proc/{pid}/{name}"


@contextlib.contextmanager
def translated(pid: int, name: str) -> Iterator[None]:
    """Raise OS errors met while reading /proc/PID/name as the runtime's process errors."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise NoSuchProcess(pid, f"no such process (reading /proc/{pid}/{name})") from exc
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise AccessDenied(pid, f"permission denied reading /proc/{pid}/{name}") from exc
        raise


def read_text(pid: int, name: str) -> str:
    with translated(pid, name), open(proc_path(pid, name), encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def read_bytes(pid: int, name: str) -> bytes:
    with translated(pid, name), open(proc_path(pid, name), "rb") as f:
        return f.read()


def read_link(pid: int, name: str) -> str:
    with translated(pid, name):
        return os.readlink(proc_path(pid, name))
