"""Every named step of a dump and of a restore made to fail (runtime/faults.py): nothing is harmed or left.

A dump that fails at any step must leave its target exactly as it was: the
target is group-stopped around the dump, so its registers, xstate, signal
mask, maps, memory and fds can be compared exactly before and after, and
then it is continued and must go on counting with its SIMD registers intact.
A restore that fails at any step, its restorer's steps included, must leave
no process behind and the PID free: the same image then restores. The
same holds for a process with threads: no task is left, every TID is free.
"""

import os
import signal

import pytest

from dump_support import start_target, target_path
from infect_support import snapshot
from restore_support import lines, wait_for
from runtime import faults, restore
from runtime.dump import DumpOptions, dump
from runtime.errors import ReviveError
from runtime.faults import InjectedFault
from runtime.infect import blobs
from runtime.images import loader
from runtime.infect.seize import seize
from runtime.kernel.procfs.mem import read_memory
from runtime.kernel.procfs.status import read_status


def restorer_steps() -> list[str]:
    proto = blobs.protocol()
    names = sorted(name for name in dir(proto) if name.startswith("RESTORER_STEP_"))
    return [faults.RESTORER_PREFIX + name[len("RESTORER_STEP_"):].lower() for name in names]


def frozen_state(pid: int):
    """Registers, xstate, mask, maps, memory and fds of a group-stopped process, left stopped."""
    with seize(pid) as seized:
        assert seized.leader.group_stopped
        state = snapshot(pid)
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    return state, fds


def ticks(target) -> list[int]:
    return [int(words[1]) for words in lines(target.out, "tick")]


@pytest.mark.parametrize("leave_running", [False, True], ids=["default", "leave-running"])
@pytest.mark.parametrize("step", faults.DUMP_STEPS)
def test_a_dump_failing_at_each_step_leaves_the_target_exactly_as_it_was(step, leave_running, tmp_path,
                                                                          monkeypatch):
    target = start_target([str(target_path("restore_state"))], tmp_path)
    try:
        wait_for(lambda: ticks(target), what="the first tick")
        os.kill(target.pid, signal.SIGSTOP)
        wait_for(lambda: read_status(target.pid).state == "T", what="the stop")
        before = frozen_state(target.pid)
        monkeypatch.setenv(faults.ENV, step)
        with pytest.raises(InjectedFault, match=f"injected failure at step {step}"):
            dump(target.pid, tmp_path / "img", DumpOptions(leave_running=leave_running))
        monkeypatch.delenv(faults.ENV)
        assert not (tmp_path / "img").exists(), "a failed dump left image files"
        assert target.alive()
        assert frozen_state(target.pid) == before
        # Just detached, it re-enters its group stop: it stays stopped and untraced.
        wait_for(lambda: read_status(target.pid).state == "T", what="the group stop after the release")
        assert read_status(target.pid).tracer_pid == 0
        counted = len(ticks(target))
        os.kill(target.pid, signal.SIGCONT)
        wait_for(lambda: len(ticks(target)) > counted + 2, what="the target to go on")
        seen = lines(target.out, "tick")
        assert [int(words[1]) for words in seen] == list(range(len(seen))), "a tick was skipped or repeated"
        assert all("simd=ok" in words for words in seen)
    finally:
        target.stop()


@pytest.fixture(scope="module")
def dumped_image(tmp_path_factory):
    """A restore_state target dumped (and so killed); its PID is free again."""
    workdir = tmp_path_factory.mktemp("dumped")
    target = start_target([str(target_path("restore_state"))], workdir)
    try:
        wait_for(lambda: ticks(target), what="the first tick")
        dump(target.pid, workdir / "img")
    finally:
        target.stop()
    return target, workdir / "img"


@pytest.mark.parametrize("step", faults.RESTORE_STEPS + tuple(restorer_steps()))
def test_a_restore_failing_at_each_step_leaves_no_process_and_the_pid_free(step, dumped_image, monkeypatch):
    target, images = dumped_image
    monkeypatch.setenv(faults.ENV, step)
    with pytest.raises(ReviveError) as failure:
        restore.restore(str(images), detach=True)
    monkeypatch.delenv(faults.ENV)
    if step != faults.RESTORER_PREFIX + "close_fds":  # it closes the error pipe too: nothing can report after it
        assert step.rsplit(".", 1)[1] in str(failure.value)
    assert not os.path.exists(f"/proc/{target.pid}"), f"a failed restore at {step} left pid {target.pid}"
    # The PID is free and the image intact: the same restore now works, and the process counts on.
    counted = len(ticks(target))
    assert restore.restore(str(images), detach=True) == 0
    try:
        wait_for(lambda: len(ticks(target)) > counted + 1, what="the restored target to count")
    finally:
        os.kill(target.pid, signal.SIGKILL)
        os.waitpid(target.pid, 0)


THREADS = 8


@pytest.fixture(scope="module")
def dumped_threads(tmp_path_factory):
    """A threads_many target with THREADS threads dumped (and so killed); its PID and TIDs are free again."""
    workdir = tmp_path_factory.mktemp("dumped-threads")
    target = start_target([str(target_path("threads_many")), str(THREADS)], workdir)
    try:
        dump(target.pid, workdir / "img")
    finally:
        target.stop()
    with loader.load(workdir / "img") as checkpoint:
        tids = [thread.tid for thread in checkpoint.root.process.threads]
    return target, workdir / "img", tids


def counters(pid: int, address: int) -> list[int]:
    data = read_memory(pid, address, 8 * THREADS)
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


@pytest.mark.parametrize("step", ("restore.handover",) + tuple(restorer_steps()))
def test_a_threaded_restore_failing_at_each_step_leaves_no_thread_and_the_ids_free(step, dumped_threads,
                                                                                  monkeypatch):
    target, images, tids = dumped_threads
    monkeypatch.setenv(faults.ENV, step)
    with pytest.raises(ReviveError):
        restore.restore(str(images), detach=True)
    monkeypatch.delenv(faults.ENV)
    assert not [tid for tid in tids if os.path.exists(f"/proc/{tid}")], f"a failed restore at {step} left tasks"
    assert restore.restore(str(images), detach=True) == 0
    try:
        restored = counters(target.pid, target.addr("counters"))
        wait_for(lambda: all(now > then for now, then in zip(counters(target.pid, target.addr("counters")),
                                                                restored)), what="every thread to count on")
    finally:
        os.kill(target.pid, signal.SIGKILL)
        os.waitpid(target.pid, 0)
