"""clone3 with set_tid: a child process with a chosen PID.

Why a module of its own: the PID is part of what a process sees of itself
(getpid, /proc/self, files that hold it), so a restored process must get its
original one, and only clone3's set_tid (Linux 5.5, with
CAP_CHECKPOINT_RESTORE) asks the kernel for a specific PID. The installed
headers (6.1) have no struct clone_args with set_tid for ctypes to use, so
its layout is declared here.

The child returns from the same ctypes call, like fork() but without
Python's fork handlers: it must do little, start no threads, and end in
os._exit or exec (here: in the restorer).
"""

import ctypes
import errno
import os
import signal

from runtime.errors import RestoreError
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.holders import describe_holder

NR_CLONE3 = 435
CLONE_PARENT = 0x00008000
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


class CloneArgs(ctypes.Structure):
    """struct clone_args, CLONE_ARGS_SIZE_VER2 (88 bytes)."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("pidfd", ctypes.c_uint64),
        ("child_tid", ctypes.c_uint64),
        ("parent_tid", ctypes.c_uint64),
        ("exit_signal", ctypes.c_uint64),
        ("stack", ctypes.c_uint64),
        ("stack_size", ctypes.c_uint64),
        ("tls", ctypes.c_uint64),
        ("set_tid", ctypes.c_uint64),
        ("set_tid_size", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
    ]




def clone_with_pid(pid: int, same_parent: bool = False) -> int:
    """Fork this process as PID pid: returns pid in the parent and 0 in the child.

    same_parent: the child's parent is ours (CLONE_PARENT), not us; clone3 then takes no exit
    signal, the child gets ours (SIGCHLD: we are a fork's child too).
    """
    tids = (ctypes.c_int32 * 1)(pid)
    args = CloneArgs(flags=CLONE_PARENT if same_parent else 0, exit_signal=0 if same_parent else signal.SIGCHLD,
                     set_tid=ctypes.addressof(tids), set_tid_size=1)
    got = _libc.syscall(ctypes.c_long(NR_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if got >= 0:
        return got
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise RestoreError(pid, f"pid is in use: {describe_holder(pid)}")
    if err == errno.EPERM:
        raise RestoreError(pid, "choosing a pid needs CAP_CHECKPOINT_RESTORE (clone3 set_tid: not permitted)")
    if err == errno.EINVAL:
        raise RestoreError(pid, f"pid is not valid here (above /proc/sys/kernel/pid_max {_pid_max()}?)")
    raise RestoreError(pid, f"clone3 with set_tid failed: {os.strerror(err)}")


def _pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def become_subreaper() -> None:
    """Make the orphans of our children ours to reap.

    `restore -d` returns while the restored process runs on; it was the
    restore command's child, so without this it would be reparented to init
    and a caller that kills it could not reap it (its PID stays taken).
    """
    set_subreaper(True)


def set_subreaper(on: bool) -> None:
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_subreaper() -> bool:
    value = ctypes.c_int()
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_GET_CHILD_SUBREAPER): {os.strerror(err)}")
    return bool(value.value)
