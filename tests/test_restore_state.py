"""Restore of a C target with known state: counter, SIMD registers, signals, files, vDSO time, CPU, memory."""

import os
import signal
import time

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, wait_for
from runtime import restore
from runtime.errors import RestoreError


@pytest.fixture
def state_target(tmp_path, request):
    argv = [str(target_path("restore_state")), *getattr(request, "param", ())]
    proc = Restorable(argv, tmp_path)
    yield proc
    proc.stop()


def ticks(proc) -> list[int]:
    return [int(words[1]) for words in lines(proc.out, "tick")]


def wait_ticks(proc, more: int) -> list[int]:
    start = len(ticks(proc))
    return wait_for(lambda: len(ticks(proc)) >= start + more and ticks(proc), what=f"{more} more ticks")


def check_counter_continues(proc) -> None:
    seen = ticks(proc)
    assert seen == list(range(len(seen))), "the counter skipped or repeated"
    data = [int(x) for x in (proc.workdir / "data.txt").read_text().split()]
    assert data == list(range(len(data))), "data.txt was not written further at its offset"


def test_restore_continues_counter_and_keeps_registers_time_and_cpu(state_target):
    wait_ticks(state_target, 3)
    state_target.dump()
    before = len(ticks(state_target))
    state_target.restore()
    wall_before = time.time_ns()
    wait_ticks(state_target, 5)
    after = lines(state_target.out, "tick")[before:]
    wall_after = time.time_ns()  # every line read above was printed before this
    check_counter_continues(state_target)
    assert all(words[4] == "simd=ok" for words in after), after
    fresh = [int(words[2][3:]) for words in after[-3:]]
    assert all(wall_before - 1_000_000_000 <= ns <= wall_after for ns in fresh), (fresh, wall_before)
    assert all(0 <= int(words[3][4:]) < os.cpu_count() for words in after)


def test_restore_keeps_handler_and_delivers_the_pending_blocked_signal(state_target):
    wait_ticks(state_target, 2)
    state_target.dump()
    state_target.restore()
    os.kill(state_target.pid, signal.SIGUSR1)
    wait_for(lambda: lines(state_target.out, "usr1"), what="the SIGUSR1 handler")
    assert not lines(state_target.out, "usr2")
    (state_target.workdir / "unblock").touch()
    assert wait_for(lambda: lines(state_target.out, "usr2"), what="SIGUSR2")[0] == ["usr2", "si_value=4242"]
    assert lines(state_target.out, "usr1")[0] == ["usr1", "1"]


@pytest.mark.parametrize("state_target", [("256",)], indirect=True)
def test_restore_keeps_256_mib_of_patterned_memory(state_target):
    wait_ticks(state_target, 1)
    state_target.dump()
    state_target.restore()
    (state_target.workdir / "verify").touch()
    assert wait_for(lambda: lines(state_target.out, "verify"), timeout=30, what="verify")[0] == ["verify", "ok", "0"]
    check_counter_continues(state_target)


def test_restoring_the_same_images_twice_in_a_row_works(state_target):
    wait_ticks(state_target, 2)
    state_target.dump()
    dumped = len(ticks(state_target))
    data_file = state_target.workdir / "data.txt"
    # The second restore writes over what the first one wrote: the same offsets, the same ticks.
    for _ in range(2):
        state_target.restore()
        wait_ticks(state_target, 2)
        state_target.kill_restored()
        seen = ticks(state_target)
        # Each restore continues at the dumped tick, writing at the dumped offsets.
        assert seen[dumped] == dumped
        data = [int(x) for x in data_file.read_text().split()]
        assert data[:dumped + 1] == list(range(dumped + 1))


def test_restore_refuses_a_taken_pid_and_works_once_it_is_free(state_target):
    wait_ticks(state_target, 2)
    state_target.dump(leave_running=True)
    with pytest.raises(RestoreError,
                       match=rf"^pid {state_target.pid}: pid is in use: held by the live process restore_state"):
        restore.restore(str(state_target.images), detach=True)
    wait_ticks(state_target, 2)
    assert state_target.target.alive()
    state_target.target.stop()
    state_target.restore()
    wait_ticks(state_target, 2)
    assert os.path.exists(f"/proc/{state_target.pid}")


def test_restore_that_fails_in_the_child_leaves_no_process(state_target):
    wait_ticks(state_target, 1)
    state_target.dump()
    (state_target.workdir / "data.txt").unlink()
    with pytest.raises(RestoreError, match=rf"^pid {state_target.pid}: fd \d+: cannot reopen .*data.txt"):
        restore.restore(str(state_target.images), detach=True)
    assert not os.path.exists(f"/proc/{state_target.pid}")
