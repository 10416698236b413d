"""A runtime SIGKILLed in the middle of a command: the target lives on unharmed."""

import os
import signal
import subprocess
import sys
import time


from infect_support import assert_keeps_ticking, ticks, wait_for_line
from runtime.infect.seize import seize
from runtime.infect.session import infect
from runtime.kernel.procfs import mem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 64

# The runtime dumps the whole region into a pipe nobody reads, so it blocks
# in the middle of DUMP_PAGES with the parasite blocked in vmsplice.
STUCK_RUNTIME = """
import os, sys
from runtime.infect.parasite import Iovec
from runtime.infect.session import infect
pid, base, size = (int(a, 0) for a in sys.argv[1:4])
r, w = os.pipe()
with infect(pid) as parasite:
    print("started", flush=True)
    parasite.dump_pages([Iovec(base, size)], w)
"""


STATE_TARGET_MIB = MIB  # for conftest's state_target


def tracer_of(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid line")


def test_target_survives_runtime_killed_during_dump_pages(state_target):
    pid = state_target.pid
    maps_before = open(f"/proc/{pid}/maps").read().splitlines()
    runtime = subprocess.Popen([sys.executable, "-c", STUCK_RUNTIME, str(pid), state_target.info["pages"],
                                str(MIB << 20)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert runtime.stdout.readline().strip() == "started"
        time.sleep(0.3)
        stuck_at = ticks(state_target.out)[-1]
        time.sleep(0.1)
        assert ticks(state_target.out)[-1] == stuck_at  # the leader is in the parasite, not counting
        runtime.send_signal(signal.SIGKILL)
    finally:
        runtime.wait()
    deadline = time.monotonic() + 2
    while tracer_of(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tracer_of(pid) == 0
    assert_keeps_ticking(state_target.out)
    assert ticks(state_target.out)[-1] > stuck_at
    # Nothing stays behind: the parasite unmapped its own area on its way out.
    assert open(f"/proc/{pid}/maps").read().splitlines() == maps_before
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2", "7"]
    # Its memory is intact and it can be infected again.
    with seize(pid):
        page = mem.read_memory(pid, state_target.addr("pages") + 5 * 4096, 16)
    assert page[:8] == (5).to_bytes(8, "little") and page[8:] == bytes((5 * 7 + k) & 0xFF for k in range(8, 16))
    with infect(pid) as parasite:
        assert parasite.echo(99) == 99
    assert_keeps_ticking(state_target.out)


def test_nothing_is_left_when_the_parasite_is_told_nothing(state_target):
    """Control for the test above: a normal cure leaves no mapping and no fd behind."""
    pid = state_target.pid
    maps_before = open(f"/proc/{pid}/maps").read()
    with infect(pid) as parasite:
        parasite.noop()
    wait_for_line(state_target.out, "tick")
    assert open(f"/proc/{pid}/maps").read() == maps_before
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2", "7"]
