"""A target inside a syscall resumes it after infection as the kernel would have without us."""

import os
import time

import pytest

from dump_support import start_target, target_path
from infect_support import wait_for_line
from runtime.infect.session import infect


@pytest.fixture
def blocked(tmp_path):
    targets = []

    def start(mode, arg):
        target = start_target([str(target_path("infect_blocked")), mode, arg], tmp_path)
        targets.append(target)
        return target

    yield start
    for target in targets:
        target.stop()


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def infect_for(pid, seconds):
    with infect(pid) as parasite:
        parasite.noop()
        time.sleep(seconds)
        parasite.echo(7)


def test_read_on_a_pipe_restarts_and_gets_data_written_later(blocked, fifo):
    target = blocked("read", str(fifo))
    time.sleep(0.1)
    infect_for(target.pid, 0.05)
    infect_for(target.pid, 0.0)
    with open(fifo, "w") as writer:
        writer.write("hello")
    assert wait_for_line(target.out, "read ") == "read 5 hello"


def test_nanosleep_ends_at_the_right_time(blocked):
    target = blocked("nanosleep", "800")
    time.sleep(0.2)
    infect_for(target.pid, 0.2)
    ret, elapsed = wait_for_line(target.out, "nanosleep ").split()[1:]
    assert ret == "0" and 795 <= float(elapsed) < 900


def test_futex_wait_restarts_and_is_woken_later(blocked, fifo):
    target = blocked("futex", str(fifo))
    time.sleep(0.1)
    infect_for(target.pid, 0.05)
    time.sleep(0.1)
    assert "\nfutex " not in target.out.read_text()
    with open(fifo, "w") as writer:
        writer.write("x")
    assert wait_for_line(target.out, "futex ") == "futex 0 0"


def test_futex_wait_with_timeout_keeps_its_deadline(blocked):
    target = blocked("futex-timeout", "700")
    time.sleep(0.2)
    infect_for(target.pid, 0.2)
    ret, err, elapsed = wait_for_line(target.out, "futex-timeout ").split()[1:]
    assert (ret, err) == ("-1", "110") and 695 <= float(elapsed) < 800
