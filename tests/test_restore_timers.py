"""The alternate signal stack and an interval timer come back with a restored process and keep working."""

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, wait_for


@pytest.fixture
def timers(tmp_path):
    proc = Restorable([str(target_path("restore_timers"))], tmp_path)
    yield proc
    proc.stop()


def ticks(proc) -> list[tuple[int, int, int, int, int]]:
    return [(int(a), int(o), int(sp, 16), int(size), int(usec)) for _, a, o, sp, size, usec in lines(proc.out, "tick")]


def test_restore_keeps_the_altstack_and_the_interval_timer_running(timers):
    ss_sp = int(timers.target.info["ss_sp"], 16)
    wait_for(lambda: len(ticks(timers)) >= 5 and ticks(timers)[-1][0] >= 2, what="the first alarms")
    timers.dump()
    dumped = ticks(timers)
    alarms_at_dump, onstack_at_dump = dumped[-1][0], dumped[-1][1]
    timers.restore()
    wait_for(lambda: len(ticks(timers)) >= len(dumped) + 20, what="ticks after the restore")
    after = ticks(timers)[len(dumped):]
    alarms, onstack, sp, size, interval = after[-1]
    assert alarms >= alarms_at_dump + 5, "SIGALRM keeps firing: ITIMER_REAL was restored"
    assert onstack - onstack_at_dump == alarms - alarms_at_dump, "every alarm after restore ran on the altstack"
    assert all((t[2], t[3], t[4]) == (ss_sp, 64 * 1024, 20000) for t in after)
