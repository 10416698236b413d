"""clone3 with set_tid: the child gets exactly the PID asked for; a taken PID is refused by name."""

import os
import random

import pytest

from runtime.clone import clone_with_pid
from runtime.errors import RestoreError


def free_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    while True:
        pid = random.randrange(pid_max // 2, pid_max)
        if not os.path.exists(f"/proc/{pid}"):
            return pid


def test_clone_with_pid_gives_the_child_that_pid():
    pid = free_pid()
    r, w = os.pipe()
    child = clone_with_pid(pid)
    if child == 0:
        os.write(w, str(os.getpid()).encode())
        os._exit(0)
    try:
        os.close(w)
        assert child == pid
        assert os.read(r, 64) == str(pid).encode()
    finally:
        os.close(r)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_clone_with_a_taken_pid_is_refused_naming_it():
    pid = os.getpid()
    with pytest.raises(RestoreError, match=rf"^pid {pid}: pid is in use$"):
        clone_with_pid(pid)
