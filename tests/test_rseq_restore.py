"""rseq after restore: the area registered again, the abort applied, NO_RESTART's rseq_cs written back."""

import os
import signal
import struct
import sys
import time
from collections import Counter

import pytest

from dump_support import start_target, target_path
from rseq_support import kill_and_reap, start_rseq_target, status_lines, wait_progress, wait_stopped
from runtime.dump import dump
from runtime.images import loader
from runtime.images.model import RseqCase
from runtime.infect.seize import seize
from runtime.kernel import ptrace
from runtime.restore import restore
from runtime.task import rseq

SIG = 0x5EE5C0DE
SI_KERNEL = 0x80
CYCLES = 50


def restore_traced(images) -> int:
    """Restore and keep the task stopped under our ptrace, before it runs its own code; its pid.

    The killed original needs no reaping here: the dump, its tracer, has
    collected its exit, and as it was our own child that reaped it.
    """
    pid = loader.load(images).root.process.pid
    restore(str(images), detach=True, leave_traced=True)
    return pid


def check_registration(pid, thread):
    conf = ptrace.get_rseq_configuration(pid)
    assert (conf.address, conf.size, conf.signature) == (thread.rseq.address, thread.rseq.size,
                                                         thread.rseq.signature)


@pytest.fixture
def counter(tmp_path):
    target = start_rseq_target("rseq_counter", [], tmp_path)
    pids = [target.pid]
    yield target, pids
    target.stop()
    for pid in pids:
        kill_and_reap(pid)


def test_counter_survives_dump_restore_cycles_resuming_in_its_abort_handler(counter, tmp_path):
    target, pids = counter
    pid = target.pid
    cases = Counter()
    time.sleep(0.05)
    for cycle in range(CYCLES):
        images = tmp_path / f"img-{cycle}"
        dump(pid, images)
        thread = loader.load(images).root.process.threads[0]
        assert thread.rseq.address == target.addr("area") and thread.rseq.signature == SIG
        cases[thread.rseq.case] += 1
        committed = status_lines(target)[-1]["commits"] if status_lines(target) else 0
        restore_traced(images)
        regs = ptrace.get_regs(pid)
        check_registration(pid, thread)
        assert regs.rip == thread.regs.rip
        if thread.rseq.case is RseqCase.ABORT:
            assert regs.rip == target.addr("abort")
        assert rseq.read_u64(pid, thread.rseq.address + rseq.RSEQ_CS_OFFSET) == 0
        ptrace.detach(pid)
        wait_progress(target, committed)
    assert cases[RseqCase.NO_RESTART] == 0
    assert cases[RseqCase.ABORT] > 0, cases
    print(f"rseq_counter: {cases[RseqCase.ABORT]} of {CYCLES} dumps caught it inside", file=sys.stderr)


def test_counter_in_four_threads_survives_dump_restore_cycles(tmp_path):
    """Four threads, each with its own rseq area and checks, all continue through every cycle."""
    target = start_rseq_target("rseq_counter", ["1000000", "4"], tmp_path)
    caught = 0
    try:
        time.sleep(0.05)
        for cycle in range(CYCLES):
            images = tmp_path / f"img-{cycle}"
            before = status_lines(target)[-1]["min_commits"] if status_lines(target) else 0
            dump(target.pid, images)
            threads = loader.load(images).root.process.threads
            assert len(threads) == 4 and len({t.rseq.address for t in threads}) == 4
            caught += sum(t.rseq.case is RseqCase.ABORT for t in threads)
            restore(str(images), detach=True)
            # Every thread commits on (min_commits), none reports a violation (status_lines).
            deadline = time.monotonic() + 5
            while not (status_lines(target) and status_lines(target)[-1]["min_commits"] > before):
                assert time.monotonic() < deadline, f"cycle {cycle}: a thread stopped committing"
                time.sleep(0.02)
    finally:
        target.stop()
        kill_and_reap(target.pid)
    print(f"rseq_counter x4: {caught} of {4 * CYCLES} thread dumps caught inside a section", file=sys.stderr)


@pytest.mark.parametrize("flag_in", ["cs", "area"])
def test_no_restart_thread_is_restored_inside_its_section_with_rseq_cs_back(flag_in, tmp_path):
    target = start_rseq_target("rseq_stop", [flag_in], tmp_path)
    try:
        wait_stopped(target.pid)
        images = tmp_path / "img"
        dump(target.pid, images)
        thread = loader.load(images).root.process.threads[0]
        assert thread.rseq.case is RseqCase.NO_RESTART
        assert thread.regs.rip == target.addr("stop_ip")
        restore_traced(images)
        check_registration(target.pid, thread)
        assert ptrace.get_regs(target.pid).rip == target.addr("stop_ip")
        area = target.addr("area")
        assert rseq.read_u64(target.pid, area + rseq.RSEQ_CS_OFFSET) == target.addr("cs")
        descriptor = rseq.read_descriptor(target.pid, target.addr("cs"))
        assert descriptor == thread.rseq.cs
        assert rseq.in_critical_section(target.addr("stop_ip"), descriptor)
        expected_area_flags = rseq.RseqCsFlag.NO_RESTART_ON_SIGNAL if flag_in == "area" else 0
        assert rseq.read_u32(target.pid, area + rseq.RSEQ_FLAGS_OFFSET) == expected_area_flags
        # Let it run: the kernel finds it inside a NO_RESTART section, as it found the original,
        # and forces SIGSEGV (SI_KERNEL), which a fault of the thread's own would not give.
        ptrace.cont(target.pid)
        stop = ptrace.wait(target.pid)
        assert stop.signal == signal.SIGSEGV, stop.describe()
        assert struct.unpack("<iii", ptrace.get_siginfo(target.pid)[:12]) == (signal.SIGSEGV, 0, SI_KERNEL)
    finally:
        target.stop()
        kill_and_reap(target.pid)


def wait_cpu_id(pid, area, cpu, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(area + rseq.RSEQ_CPU_ID_OFFSET)
            if int.from_bytes(mem.read(4), "little") == cpu:
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid}: cpu_id in the rseq area never became {cpu}")


GLIBC_PROGRAMS = {
    "rseq_getcpu": lambda: [str(target_path("rseq_getcpu"))],
    "python3": lambda: [sys.executable, "-c",
                        "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.005)"],
}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move the thread")
@pytest.mark.parametrize("program", sorted(GLIBC_PROGRAMS))
def test_glibc_program_has_its_area_registered_again_and_cpu_id_is_live(program, tmp_path):
    target = start_target(GLIBC_PROGRAMS[program](), tmp_path)
    pid = target.pid
    try:
        with seize(pid):
            before = ptrace.get_rseq_configuration(pid)
        assert before.address
        images = tmp_path / "img"
        dump(pid, images)
        thread = loader.load(images).root.process.threads[0]
        assert (thread.rseq.address, thread.rseq.size, thread.rseq.signature) == (
            before.address, before.size, before.signature)
        restore_traced(images)
        check_registration(pid, thread)
        ptrace.detach(pid)
        cpus = sorted(os.sched_getaffinity(0))[:2]
        for cpu in (cpus[0], cpus[1], cpus[0]):
            os.sched_setaffinity(pid, {cpu})
            wait_cpu_id(pid, before.address, cpu)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    finally:
        target.stop()
        kill_and_reap(pid)
