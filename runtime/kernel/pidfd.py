"""pidfd_getfd(2): a duplicate of another process's descriptor in ours, the same open file description.

Why: a socket cannot be reopened through /proc/PID/fd (ENXIO), yet its
queues can only be read through a descriptor of it. pidfd_getfd (Linux 5.6)
gives one to a process that may ptrace the target, as the dump may.
"""

import ctypes
import os

from runtime.errors import DumpError
from runtime.kernel.libc import libc as _libc

NR_PIDFD_GETFD = 438


def get_fd(pid: int, fd: int) -> int:
    """fd of process pid duplicated into this process, close-on-exec."""
    pidfd = os.pidfd_open(pid)
    try:
        got = _libc.syscall(NR_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            raise DumpError(pid, f"fd {fd}: pidfd_getfd: {os.strerror(ctypes.get_errno())}")
        return got
    finally:
        os.close(pidfd)
