"""Infecting and curing the same process many times leaves it exactly as it was."""

import time

from infect_support import assert_keeps_ticking, snapshot
from runtime.infect.seize import seize
from runtime.infect.session import infect

CYCLES = 200


STATE_TARGET_MIB = 4  # for conftest's state_target


def test_200_infections_keep_registers_avx512_mask_maps_and_memory(state_target):
    pid = state_target.pid
    started = time.monotonic()
    for cycle in range(CYCLES):
        with seize(pid) as seized:
            before = snapshot(pid)
            with infect(seized) as parasite:
                assert parasite.echo(cycle) == cycle
            after = snapshot(pid)
        assert after == before, f"cycle {cycle}"
        assert "CORRUPT" not in state_target.out.read_text()
    assert time.monotonic() - started < 30
    assert_keeps_ticking(state_target.out)


def test_infection_that_seizes_by_itself_resumes_the_target(state_target):
    for _ in range(20):
        with infect(state_target.pid) as parasite:
            parasite.noop()
    assert_keeps_ticking(state_target.out)
