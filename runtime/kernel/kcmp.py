"""kcmp(2): whether two descriptors are one open file description.

Why: after dup(), `2>&1` or fork, two fds share one open file description
(offset, flags, locks); reopening each by path would give two independent
files, and a write through one would no longer move the other's offset.
Only the kernel can tell, and kcmp(KCMP_FILE) asks it without reading or
changing anything (it needs ptrace access to the process, which the dump has).
"""

import ctypes
import os

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError
from runtime.kernel.libc import libc as _libc

KCMP_FILE = 0
KCMP_VM = 1



def same_file(pid: int, fd1: int, fd2: int, pid2: int | None = None) -> bool:
    """fd1 of pid and fd2 of pid2 (default: pid) are the same open file description."""
    got = _libc.syscall(arch.NR_KCMP, pid, pid if pid2 is None else pid2, KCMP_FILE, fd1, fd2)
    if got < 0:
        raise DumpError(pid, f"kcmp(KCMP_FILE, fd {fd1}, fd {fd2}): {os.strerror(ctypes.get_errno())}")
    return got == 0


def same_vm(pid: int, pid2: int) -> bool:
    """pid and pid2 share one address space (threads of one process, a vfork pair, clone(CLONE_VM))."""
    got = _libc.syscall(arch.NR_KCMP, pid, pid2, KCMP_VM, 0, 0)
    if got < 0:
        raise DumpError(pid, f"kcmp(KCMP_VM, {pid2}): {os.strerror(ctypes.get_errno())}")
    return got == 0
