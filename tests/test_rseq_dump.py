"""rseq at dump: a stopped thread's state read before the parasite runs, classified as the kernel would."""

import signal
import struct
import time
from collections import Counter

import pytest

from rseq_support import start_rseq_target, status_lines, wait_progress, wait_stopped
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError
from runtime.images import loader
from runtime.images.model import Rseq, RseqCase, RseqCs
from runtime.infect.seize import seize
from runtime.kernel import ptrace
from runtime.kernel.procfs import mem
from runtime.task import rseq

SIG = 0x5EE5C0DE


@pytest.fixture
def counter(tmp_path, request):
    spins = getattr(request, "param", "1000000")
    target = start_rseq_target("rseq_counter", [spins], tmp_path)
    yield target
    target.stop()


@pytest.fixture(params=["cs", "area"])
def stopped(tmp_path, request):
    """rseq_stop, group-stopped by its own SIGSTOP inside a NO_RESTART_ON_SIGNAL section."""
    target = start_rseq_target("rseq_stop", [request.param], tmp_path)
    target.flag_in = request.param
    wait_stopped(target.pid)
    yield target
    target.stop()


def test_abort_moves_the_live_thread_to_its_abort_handler_and_clears_rseq_cs(counter):
    abort_ip = counter.addr("abort")
    area = counter.addr("area")
    cases = Counter()
    # The kernel itself aborts a thread that was preempted before the
    # interrupt stop, so under load some stops are outside: try until enough are inside.
    for _ in range(200):
        if cases[RseqCase.ABORT] >= 5:
            break
        time.sleep(0.002)
        with seize(counter.pid):
            before = ptrace.get_regs(counter.pid)
            fixup = rseq.fix_up_thread(counter.pid)
            after = ptrace.get_regs(counter.pid)
            cases[fixup.rseq.case] += 1
            assert (fixup.rseq.address, fixup.rseq.size, fixup.rseq.signature) == (area, 32, SIG)
            if fixup.rseq.case is RseqCase.ABORT:
                cs = fixup.rseq.cs
                assert fixup.rseq.rseq_cs == counter.addr("cs")
                assert cs == RseqCs(0, 0, counter.addr("start"), counter.addr("post_commit"), abort_ip)
                assert rseq.in_critical_section(before.rip, cs)
                assert after.rip == fixup.regs.rip == abort_ip
                assert rseq.read_u64(counter.pid, area + rseq.RSEQ_CS_OFFSET) == 0
            else:
                assert after.rip == before.rip
    assert cases[RseqCase.ABORT] >= 5, cases
    wait_progress(counter, status_lines(counter)[-1]["commits"])


@pytest.mark.parametrize("counter", ["3000"], indirect=True)
def test_classify_sees_threads_outside_their_section_too(counter):
    cases = Counter()
    for _ in range(300):
        with seize(counter.pid):
            regs = ptrace.get_regs(counter.pid)
            fixup = rseq.classify(counter.pid, regs)
            cases[fixup.rseq.case] += 1
            if fixup.rseq.case is RseqCase.OUTSIDE:
                assert fixup.regs.rip == regs.rip and not fixup.changed
        if len(cases) == 2:
            break
    assert set(cases) == {RseqCase.OUTSIDE, RseqCase.ABORT}, cases


def test_no_restart_keeps_ip_and_saves_rseq_cs(stopped):
    with seize(stopped.pid) as seized:
        assert seized.leader.group_stopped
        regs = ptrace.get_regs(stopped.pid)
        fixup = rseq.fix_up_thread(stopped.pid)
        assert not fixup.changed
        assert regs.rip == fixup.regs.rip == stopped.addr("stop_ip")
        assert fixup.rseq.case is RseqCase.NO_RESTART
        assert fixup.rseq.rseq_cs == stopped.addr("cs")
        assert fixup.rseq.cs.flags == (rseq.RseqCsFlag.NO_RESTART_ON_SIGNAL if stopped.flag_in == "cs" else 0)
        assert rseq.read_u64(stopped.pid, stopped.addr("area") + rseq.RSEQ_CS_OFFSET) == stopped.addr("cs")


def test_this_kernel_kills_a_no_restart_thread_that_resumes_inside(stopped):
    assert not rseq.kernel_honours_no_restart()
    stopped.proc.send_signal(signal.SIGCONT)
    assert stopped.proc.wait(timeout=5) == -signal.SIGSEGV


def test_a_descriptor_with_a_wrong_signature_is_refused(stopped):
    cs = stopped.addr("cs")
    abort_field = cs + 24
    with seize(stopped.pid):
        abort_ip = rseq.read_u64(stopped.pid, abort_field)
        rseq.poke_u64(stopped.pid, abort_field, abort_ip + 1)
        try:
            with pytest.raises(DumpError, match=rf"pid {stopped.pid}: rseq descriptor at {cs:#x}: signature word"):
                rseq.classify(stopped.pid, ptrace.get_regs(stopped.pid))
        finally:
            rseq.poke_u64(stopped.pid, abort_field, abort_ip)


def test_a_descriptor_pointer_into_the_kernel_half_is_refused(stopped):
    field = stopped.addr("area") + rseq.RSEQ_CS_OFFSET
    with seize(stopped.pid):
        rseq.poke_u64(stopped.pid, field, 0xFFFF_8000_0000_0000)
        try:
            with pytest.raises(DumpError, match="is not a user address"):
                rseq.classify(stopped.pid, ptrace.get_regs(stopped.pid))
        finally:
            rseq.poke_u64(stopped.pid, field, stopped.addr("cs"))


def test_peek_bytes_reads_unaligned_ranges(stopped):
    area = stopped.addr("area")
    with seize(stopped.pid):
        whole = mem.read_memory(stopped.pid, area, 32)
        for start in range(8):
            for size in (1, 4, 7, 9):
                assert rseq.peek_bytes(stopped.pid, area + start, size) == whole[start:start + size]
    assert struct.unpack("<I", whole[4:8])[0] < 4096  # cpu_id: a real CPU number


def test_dump_records_the_case_and_the_registers_it_fixed(counter, tmp_path):
    images = tmp_path / "img"
    dump(counter.pid, images, DumpOptions(leave_running=True))
    thread = loader.load(images).root.process.threads[0]
    assert thread.rseq.address == counter.addr("area") and thread.rseq.signature == SIG
    if thread.rseq.case is RseqCase.ABORT:
        assert thread.regs.rip == counter.addr("abort")
    wait_progress(counter, status_lines(counter)[-1]["commits"])


def test_dump_of_a_no_restart_thread_records_ip_and_rseq_cs(stopped, tmp_path):
    images = tmp_path / "img"
    dump(stopped.pid, images)
    thread = loader.load(images).root.process.threads[0]
    assert thread.regs.rip == stopped.addr("stop_ip")
    assert thread.rseq.case is RseqCase.NO_RESTART and thread.rseq.rseq_cs == stopped.addr("cs")


def test_describe_names_the_case_and_warns_about_no_restart_on_this_kernel():
    cs = RseqCs(0, 2, 0x1000, 0x20, 0x2000)
    no_restart = Rseq(0x5000, 32, SIG, RseqCase.NO_RESTART, 0x6000, cs)
    text = "\n".join(rseq.describe(no_restart))
    assert "case no_restart" in text and "NO_RESTART_ON_SIGNAL" in text and "[0x1000, 0x1020)" in text
    assert "does not honour" in text
    assert rseq.no_restart_warning(no_restart, "5.15.0") is None
    assert "case abort" in "\n".join(rseq.describe(Rseq(0x5000, 32, SIG, RseqCase.ABORT, 0x6000, cs)))
    assert rseq.describe(None) == ["rseq: not registered"]


def test_kernel_has_rseq():
    assert rseq.kernel_has_rseq()
