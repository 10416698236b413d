"""Each parasite command reports what the target itself set up."""

import os
import signal
import struct

import pytest

from infect_support import assert_keeps_ticking
from runtime.errors import InfectError
from runtime.infect.parasite import Iovec
from runtime.infect.session import infect

PAGE = 4096
SA_SIGINFO, SA_ONSTACK, SA_RESTART, SA_RESTORER = 0x4, 0x08000000, 0x10000000, 0x04000000


STATE_TARGET_MIB = 8  # for conftest's state_target


def bit(sig):
    return 1 << (sig - 1)


def expected_page(p):
    page = bytearray((p * 7 + k) & 0xFF for k in range(PAGE))
    page[:8] = struct.pack("<Q", p)
    return bytes(page)


def test_sigactions_are_the_ones_the_target_installed(state_target):
    with infect(state_target.pid) as parasite:
        actions = parasite.dump_sigactions()
    assert len(actions) == 64
    usr1 = actions[signal.SIGUSR1 - 1]
    assert usr1.flags == SA_SIGINFO | SA_ONSTACK | SA_RESTART | SA_RESTORER
    assert usr1.mask == bit(signal.SIGTERM) and usr1.handler > 0x1000 and usr1.restorer > 0x1000
    assert actions[signal.SIGINT - 1].handler == 1  # SIG_IGN
    caught = {sig for sig in range(1, 65) if actions[sig - 1].handler > 1}
    ignored = {sig for sig in range(1, 65) if actions[sig - 1].handler == 1}
    status = dict(line.split(":\t") for line in open(f"/proc/{state_target.pid}/status").read().splitlines())
    assert sum(bit(s) for s in caught) == int(status["SigCgt"], 16)
    assert sum(bit(s) for s in ignored) == int(status["SigIgn"], 16)


def test_misc_reports_ids_umask_rlimits_and_itimers(state_target):
    with infect(state_target.pid) as parasite:
        misc = parasite.get_misc()
    assert (misc.pid, misc.tid, misc.ppid) == (state_target.pid, state_target.pid, os.getpid())
    assert (misc.pgid, misc.sid) == (os.getpgid(state_target.pid), os.getsid(state_target.pid))
    assert misc.umask == 0o027 and misc.dumpable == 1 and misc.personality == 0
    assert misc.rlimits[7].cur == 200  # RLIMIT_NOFILE
    assert misc.itimers[2].interval_sec == 100 and 990 <= misc.itimers[2].value_sec <= 1000  # ITIMER_PROF
    assert misc.brk > 0


def test_thread_state_has_the_mask_altstack_and_clear_child_tid(state_target):
    with infect(state_target.pid) as parasite:
        thread = parasite.dump_thread()
    rtmin = int(state_target.info["sigrtmin"])
    assert thread.tid == state_target.pid
    assert thread.blocked == bit(signal.SIGUSR2) | bit(rtmin + 3)
    assert (thread.altstack.sp, thread.altstack.size, thread.altstack.flags) == (state_target.addr("altstack"), 65536, 0)
    assert thread.clear_child_tid == state_target.addr("ctid")


def test_drained_fds_are_the_targets_open_files(state_target, tmp_path):
    pid = state_target.pid
    with infect(pid) as parasite:
        fds = parasite.drain_fds([7, 1, 0])
    try:
        for mine, theirs in zip(fds, [7, 1, 0]):
            st, target_st = os.fstat(mine), os.stat(f"/proc/{pid}/fd/{theirs}")
            assert (st.st_dev, st.st_ino) == (target_st.st_dev, target_st.st_ino)
        # The same open file description: its offset is the target's.
        assert os.lseek(fds[0], 0, os.SEEK_CUR) == 6
        os.lseek(fds[0], 2, os.SEEK_SET)
        assert open(f"/proc/{pid}/fdinfo/7").readline().split() == ["pos:", "2"]
    finally:
        for fd in fds:
            os.close(fd)


def test_drain_of_many_fds_comes_in_batches(state_target):
    with infect(state_target.pid) as parasite:
        fds = parasite.drain_fds([7] * 150)
    try:
        assert len(fds) == 150 and len({os.fstat(fd).st_ino for fd in fds}) == 1
    finally:
        for fd in fds:
            os.close(fd)


def test_dump_pages_writes_the_targets_pages_in_iovec_order(state_target, tmp_path):
    base = state_target.addr("pages")
    npages = int(state_target.info["size"]) // PAGE
    chosen = list(range(0, npages, 3)) + [1, 2]
    iovecs = [Iovec(base + p * PAGE, PAGE) for p in chosen]
    out = tmp_path / "pages.img"
    with open(out, "wb") as f, infect(state_target.pid) as parasite:
        written = parasite.dump_pages(iovecs, f.fileno())
        whole = parasite.dump_pages([Iovec(base, npages * PAGE)], f.fileno())
    assert written == len(chosen) * PAGE and whole == npages * PAGE
    data = out.read_bytes()
    assert data[:written] == b"".join(expected_page(p) for p in chosen)
    assert data[written:] == b"".join(expected_page(p) for p in range(npages))
    assert_keeps_ticking(state_target.out)


def test_dump_pages_of_unmapped_memory_fails_and_the_target_survives(state_target, tmp_path):
    with open(tmp_path / "pages.img", "wb") as f, infect(state_target.pid) as parasite:
        with pytest.raises(InfectError, match="DUMP_PAGES failed: Bad address"):
            parasite.dump_pages([Iovec(0x10000, PAGE)], f.fileno())
        assert parasite.echo(3) == 3
    assert_keeps_ticking(state_target.out)
