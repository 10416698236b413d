"""Task controls (prctl options, scheduling, affinity, OOM and core-dump settings), the session and the stop state
survive a restore."""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restore_support import Restorable, lines, wait_for
from runtime import restore
from runtime.errors import RestoreError

PROGRAM = Path(__file__).parent / "programs" / "controls.py"
PROC_FILES = ("timerslack_ns", "oom_score_adj", "coredump_filter")
PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def controls_target(tmp_path, request):
    target = Restorable([sys.executable, str(PROGRAM), request.param], tmp_path)
    yield target
    target.stop()


def reported(target: Restorable, previous: int) -> list[str]:
    os.kill(target.pid, signal.SIGUSR1)
    return wait_for(lambda: len(lines(target.out, "controls")) > previous and lines(target.out, "controls")[-1],
                    what="the controls line")


def proc_state(pid: int) -> dict[str, str]:
    state = {name: Path(f"/proc/{pid}/{name}").read_text().strip() for name in PROC_FILES}
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    state["THP_enabled"] = status["THP_enabled"].strip()
    return state


def counts(target: Restorable) -> list[int]:
    return [int(words[1]) for words in lines(target.out, "count")]


def assert_counts_continue(target: Restorable, before: int) -> None:
    wait_for(lambda: len(counts(target)) > before + 3, what="the counter to go on")
    seen = counts(target)
    assert seen == list(range(1, len(seen) + 1)), "the counter skipped or repeated a value"


@pytest.mark.parametrize("controls_target", ["all"], indirect=True)
def test_restore_keeps_prctl_scheduling_affinity_oom_and_coredump_settings(controls_target):
    before = reported(controls_target, 0)
    assert "subreaper=1" in before and "slack=123456" in before and "thp=1" in before and "nice=7" in before
    assert f"policy={os.SCHED_BATCH}" in before and "cpus=0" in before and f"ioprio={2 << 13 | 6}" in before
    state = proc_state(controls_target.pid)
    assert state["oom_score_adj"] == "345" and state["THP_enabled"] == "0"
    controls_target.dump()
    counted = len(counts(controls_target))
    controls_target.restore()
    assert proc_state(controls_target.pid) == state
    assert reported(controls_target, 1) == before
    assert_counts_continue(controls_target, counted)


@pytest.mark.parametrize("controls_target", ["none"], indirect=True)
def test_restore_makes_a_session_leader_lead_its_session_and_group_again(controls_target):
    assert os.getsid(controls_target.pid) == os.getpgid(controls_target.pid) == controls_target.pid
    controls_target.dump()
    controls_target.restore()
    assert os.getsid(controls_target.pid) == os.getpgid(controls_target.pid) == controls_target.pid


@pytest.mark.parametrize("controls_target", ["none"], indirect=True)
def test_restore_brings_a_stopped_process_back_stopped_and_sigcont_continues_it(controls_target):
    wait_for(lambda: counts(controls_target), what="the first count")
    os.kill(controls_target.pid, signal.SIGSTOP)
    wait_for(lambda: "T (stopped)" in Path(f"/proc/{controls_target.pid}/status").read_text(), what="the stop")
    controls_target.dump()
    counted = len(counts(controls_target))
    controls_target.restore()
    assert "T (stopped)" in Path(f"/proc/{controls_target.pid}/status").read_text()
    time.sleep(0.2)
    assert len(counts(controls_target)) == counted, "the restored process ran while it should be stopped"
    os.kill(controls_target.pid, signal.SIGCONT)
    assert_counts_continue(controls_target, counted)


@pytest.mark.parametrize("controls_target", ["pdeath"], indirect=True)
def test_restore_detached_refuses_a_parent_death_signal_and_leaves_nothing(controls_target):
    controls_target.dump()
    with pytest.raises(RestoreError, match=r"has a parent-death signal \(SIGUSR2\): this command becomes its "
                                           r"parent, so -d would deliver it at once; restore without -d"):
        restore.restore(str(controls_target.images), detach=True)
    assert not Path(f"/proc/{controls_target.pid}").exists()


@contextlib.contextmanager
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.mark.parametrize("controls_target", ["pdeath"], indirect=True)
def test_restored_parent_death_signal_fires_when_the_restoring_command_dies(controls_target):
    controls_target.dump()
    counted = len(counts(controls_target))
    with subreaper():
        command = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(controls_target.images)],
                                   cwd=Path(__file__).parent.parent, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(counts(controls_target)) > counted, what="the restored counter")
            assert f"pdeath={signal.SIGUSR2.value}" in reported(controls_target, 0)
            command.kill()
            command.wait()
            wait_for(lambda: "parent died" in controls_target.out.read_text(), what="the parent-death signal")
            _, status = os.waitpid(controls_target.pid, 0)  # ours to reap: we are the subreaper
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(controls_target.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(controls_target.pid, 0)
            if command.poll() is None:
                command.kill()
            command.wait()
