"""One process holding one of each kernel object (tests/targets/kernel_objects.c) checks each after a restore,
and after a --leave-running dump the original finds each as it was."""

import ctypes
import fcntl
import os
import signal

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, wait_for
from runtime.kernel.procfs.timers import read_timers

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
libc.shmdt.argtypes = (ctypes.c_void_p,)
IPC_RMID, SHM_RDONLY = 0, 0o10000
SHM_SIZE = 128 * 1024
CHECKS = ("nested_epoll", "epoll", "eventfd", "timerfd", "signalfd", "inotify", "memfd", "deleted", "posix_timer", "sysv",
          "prot_none")


@pytest.fixture
def objects(tmp_path):
    key = 0x5EC0_0000 | os.getpid() & 0xFFFF
    proc = Restorable([str(target_path("kernel_objects")), str(key)], tmp_path)
    proc.key = key
    yield proc
    proc.stop()
    shmid = libc.shmget(key, 0, 0)
    if shmid >= 0:
        libc.shmctl(shmid, IPC_RMID, None)


def segment_bytes(key: int) -> bytes:
    """The segment as another process sees it, attached by key."""
    shmid = libc.shmget(key, 0, 0)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    address = libc.shmat(shmid, None, SHM_RDONLY)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        return ctypes.string_at(address, SHM_SIZE)
    finally:
        libc.shmdt(ctypes.c_void_p(address))


def flock_is_held(path) -> bool:
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def run_checks(proc) -> dict[str, list[str]]:
    """What the target finds: SIGUSR1 for its signalfd, a file for its inotify watch, then SIGUSR2 to check."""
    os.kill(proc.pid, signal.SIGUSR1)
    (proc.workdir / "watched" / "created-after").touch()
    os.kill(proc.pid, signal.SIGUSR2)
    wait_for(lambda: "done" in proc.out.read_text().splitlines(), what="the target's checks")
    return {line[1]: line[2:] for line in lines(proc.out, "check")}


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def test_every_object_works_on_after_restore(objects):
    timers = read_timers(objects.pid, objects.pid)
    objects.dump()
    assert not flock_is_held(objects.workdir / "locked"), "the dump killed the original, which let go of it"
    objects.restore()
    assert flock_is_held(objects.workdir / "locked"), "the restored process holds its flock again"
    assert segment_bytes(objects.key) == pattern(SHM_SIZE), "another process attaching by key sees the data"
    assert libc.shmget(objects.key, 0, 0) == int(objects.target.info["shmid"]), "the segment kept its id"
    assert read_timers(objects.pid, objects.pid) == timers
    checks = run_checks(objects)
    assert checks == {name: ["ok"] for name in CHECKS}


def test_a_leave_running_dump_leaves_every_object_as_it_was(objects):
    objects.dump(leave_running=True)
    assert flock_is_held(objects.workdir / "locked")
    checks = run_checks(objects)
    assert checks == {name: ["ok"] for name in CHECKS}
