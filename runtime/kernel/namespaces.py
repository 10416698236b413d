"""A new PID namespace with its own /proc: where `restore --new-pid` makes a copy of a tree.

Why: a process's PID is part of what it knows of itself. glibc caches
each thread's TID in the thread's control block, and an error-checking
mutex records its owner's TID; a copy restored under new PIDs would find
those stale. In a PID namespace of its own a copy keeps every PID and TID
it had (clone3 set_tid inside it), while outside it gets new ones, so
several copies of one image, and the original, run side by side.

/proc is mounted again for the namespace, in a mount namespace of its own
(its mounts made private first, so nothing propagates back to the
caller's): the runtime finds the processes of the copy under their own
PIDs there, as it does in the caller's namespace.
"""

import ctypes
import os

from runtime.kernel.libc import libc as _libc

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_pid_and_mounts() -> None:
    """The caller's next child is pid 1 of a new PID namespace; the caller itself gets a mount namespace of its
    own (inherited by that child)."""
    _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS), "unshare(CLONE_NEWPID | CLONE_NEWNS)")


def mount_own_proc() -> None:
    """Every mount made private, then a /proc of the caller's PID namespace over /proc (call as its pid 1)."""
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount proc /proc")
