"""clone3 with set_tid: the child gets exactly the PID asked for; a taken PID is refused by name."""

import ctypes
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from restore_support import wait_for
from runtime.errors import RestoreError
from runtime.kernel.clone import clone_with_pid

PR_SET_CHILD_SUBREAPER = 36


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


def test_clone_with_a_taken_pid_is_refused_naming_the_live_holder():
    pid = os.getpid()
    with pytest.raises(RestoreError, match=rf"^pid {pid}: pid is in use: held by the live process python3? "
                                           rf"\(parent {os.getppid()} "):
        clone_with_pid(pid)


def test_clone_with_a_taken_pid_names_an_unreaped_zombie_and_its_parent():
    zombie = subprocess.Popen(["true"])
    try:
        wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 what="the child to exit")
        with pytest.raises(RestoreError, match=rf"^pid {zombie.pid}: pid is in use: held by a zombie of true, not "
                                               rf"yet reaped by its parent {os.getpid()} \(python3?\)$"):
            clone_with_pid(zombie.pid)
    finally:
        zombie.wait()


def test_clone_with_a_taken_pid_names_the_group_still_using_it():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0  # the orphaned sleep is then ours to reap
    try:
        leader = subprocess.Popen(["bash", "-c", "sleep 1000 & echo $!"], stdout=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        member = int(leader.stdout.readline())
        leader.wait()  # reaped: only the session and group id of its child keep the pid taken
        leader.stdout.close()
        try:
            with pytest.raises(RestoreError, match=rf"^pid {leader.pid}: pid is in use: still the process group "
                                                   rf"or session id of {member} \(sleep, session\)$"):
                clone_with_pid(leader.pid)
        finally:
            os.kill(member, signal.SIGKILL)
            os.waitpid(member, 0)
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
