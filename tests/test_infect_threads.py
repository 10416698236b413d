"""A multi-threaded target: every thread stopped while the parasite runs, every thread resumed after."""

import time

import pytest

from dump_support import start_target, target_path
from infect_support import thread_states
from runtime.infect.session import infect
from runtime.kernel.procfs import mem

THREADS = 6


@pytest.fixture
def threads_target(tmp_path):
    target = start_target([str(target_path("threads_many")), str(THREADS), "1"], tmp_path)
    yield target
    target.stop()


def counters(target):
    data = mem.read_memory(target.pid, target.addr("counters"), 8 * THREADS)
    return [int.from_bytes(data[i * 8:i * 8 + 8], "little") for i in range(THREADS)]


def test_all_threads_stop_during_commands_and_all_resume_after(threads_target):
    pid = threads_target.pid
    tids = set(thread_states(pid))
    assert len(tids) == THREADS
    for _ in range(5):
        with infect(pid) as parasite:
            during = counters(threads_target)
            parasite.noop()
            assert parasite.get_misc().tid == pid  # the parasite runs in the leader
            time.sleep(0.05)
            assert counters(threads_target) == during
            states = thread_states(pid)
            assert {states[tid] for tid in tids - {pid}} == {"t"}
        time.sleep(0.05)
        after = counters(threads_target)
        assert all(a > d for d, a in zip(during, after)), (during, after)
        assert set(thread_states(pid)) == tids
        assert "t" not in thread_states(pid).values()
