"""POSIX timers come back with their ids, clocks, signals and values, and keep firing at their intervals."""

import time

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, wait_for
from runtime.images.loader import load
from runtime.kernel.procfs.timers import read_timers


@pytest.fixture
def timers(tmp_path):
    proc = Restorable([str(target_path("posix_timers"))], tmp_path)
    yield proc
    proc.stop()


def ticks(proc) -> list[tuple[int, ...]]:
    """(a_good, a_bad, b_good, b_bad, d, c_left_ms, lost) per tick line."""
    return [tuple(int(word) for word in line[1:]) for line in lines(proc.out, "tick")]


def counts_grow(proc, since: tuple[int, ...], by: int):
    last = ticks(proc)[-1] if ticks(proc) else since
    return all(last[i] >= since[i] + by for i in (0, 2, 4)) and last


def test_restored_timers_keep_their_ids_signals_values_and_intervals(timers):
    wait_for(lambda: ticks(timers) and counts_grow(timers, (0,) * 7, 3), what="every timer firing")
    listed = read_timers(timers.pid, timers.pid)
    timers.dump()
    dumped = ticks(timers)[-1]
    timers.restore()
    assert read_timers(timers.pid, timers.pid) == listed, "same ids, clocks, signals, values and threads"
    since = wait_for(lambda: counts_grow(timers, dumped, 2), what="the timers firing after the restore")
    started = time.monotonic()
    time.sleep(0.6)
    last = ticks(timers)[-1]
    elapsed = time.monotonic() - started
    a_good, a_bad, b_good, b_bad, d_count, c_left, lost = last
    assert (a_bad, b_bad, lost) == (0, 0, 0), "every signal had its value, timer id and thread; no timer lost"
    # Each fires at its own interval (20, 30, 40 ms): never faster, and not stopped (a lenient floor for load).
    for got, before, interval in ((a_good, since[0], 0.020), (b_good, since[2], 0.030), (d_count, since[4], 0.040)):
        assert 3 <= got - before <= elapsed / interval + 3, (got - before, elapsed, interval)
    # The SIGEV_NONE one-shot kept running down from where it was, not from 1000 s again.
    assert 0 < c_left <= dumped[5]


def test_the_image_holds_each_timer_and_the_original_runs_on(timers):
    wait_for(lambda: ticks(timers) and counts_grow(timers, (0,) * 7, 1), what="every timer firing")
    timers.dump(leave_running=True)
    with load(timers.images) as checkpoint:
        process = checkpoint.root.process
    by_id = {t.id: t for t in process.posix_timers}
    a, b, c, e = (by_id[int(timers.target.info[name])] for name in "abce")
    assert (a.clock, a.notify, a.sigev_value, a.interval_nsec) == (1, 0, 0xA1, 20_000_000)
    assert (b.clock, b.notify, b.sigev_value, b.interval_nsec) == (0, 4, 0xB2, 30_000_000)
    assert b.tid in {t.tid for t in process.threads} and b.tid != process.pid
    assert (c.notify, c.interval_sec, c.interval_nsec) == (1, 0, 0) and 990 <= c.value_sec < 1000
    assert (e.clock, e.signal, e.value_sec, e.value_nsec) == (7, 12, 0, 0), "never armed: restored disarmed"
    assert len(process.posix_timers) == 5  # and d, glibc's SIGEV_THREAD timer, on glibc's helper thread
    # The original runs on unharmed: its timers still fire, none lost.
    seen = ticks(timers)[-1]
    wait_for(lambda: counts_grow(timers, seen, 3), what="the timers firing after a --leave-running dump")
    assert ticks(timers)[-1][1::2][:2] == (0, 0) and ticks(timers)[-1][6] == 0
