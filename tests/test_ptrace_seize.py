"""Seizing whole processes, the ptrace layer and injected syscalls, against real targets."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dump_support import start_target, target_path
from infect_support import assert_keeps_ticking, snapshot, thread_states, wait_for_line
from runtime.arch import x86_64 as arch
from runtime.kernel import ptrace
from runtime.errors import (AlreadyTraced, KernelThread, NoSuchProcess, OwnProcess,
                            ZombieProcess)
from runtime.infect.remote_syscall import RemoteSyscall
from runtime.infect.seize import seize
from runtime.kernel.procfs import mem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def threads_target(tmp_path):
    target = start_target([str(target_path("threads_many")), "5", "1"], tmp_path)
    yield target
    target.stop()


def counters(target, n=5):
    data = mem.read_memory(target.pid, target.addr("counters"), 8 * n)
    return [int.from_bytes(data[i * 8:i * 8 + 8], "little") for i in range(n)]


def test_seize_stops_every_thread_and_release_resumes_them(threads_target):
    pid = threads_target.pid
    with seize(pid) as seized:
        assert sorted(seized.tids) == sorted(thread_states(pid))
        assert seized.tids[0] == pid
        assert set(thread_states(pid).values()) == {"t"}
        first = counters(threads_target)
        time.sleep(0.05)
        assert counters(threads_target) == first
    time.sleep(0.05)
    assert all(after > before for before, after in zip(first, counters(threads_target)))
    assert "t" not in thread_states(pid).values()


def test_group_stopped_process_is_seized_and_stays_stopped(threads_target):
    pid = threads_target.pid
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 2
    while set(thread_states(pid).values()) != {"T"} and time.monotonic() < deadline:
        time.sleep(0.01)
    with seize(pid) as seized:
        assert all(t.group_stopped for t in seized.threads.values())
        assert RemoteSyscall.for_thread(pid, pid)(arch.NR_GETPID) == pid
    time.sleep(0.05)
    assert set(thread_states(pid).values()) == {"T"}
    first = counters(threads_target)
    time.sleep(0.05)
    assert counters(threads_target) == first
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.05)
    assert all(after > before for before, after in zip(first, counters(threads_target)))


def test_release_can_leave_the_process_stopped(threads_target):
    pid = threads_target.pid
    seize(pid).release(leave_stopped=True)
    time.sleep(0.05)
    assert set(thread_states(pid).values()) == {"T"}
    os.kill(pid, signal.SIGCONT)


def test_remote_syscalls_put_registers_xstate_mask_and_memory_back(state_target):
    pid = state_target.pid
    with seize(pid):
        before = snapshot(pid)
        remote = RemoteSyscall.for_thread(pid, pid)
        for _ in range(20):
            assert remote(arch.NR_GETPID) == pid
        fd = remote(arch.NR_MEMFD_CREATE, remote.syscall_ip - 2 + 16, 0)  # any readable string will do
        assert fd >= 0 and remote(arch.NR_CLOSE, fd) == 0
        assert remote(arch.NR_CLOSE, 12345) == -9  # EBADF comes back as the raw result
        assert snapshot(pid) == before
    assert_keeps_ticking(state_target.out)


def test_xstate_is_the_full_avx512_area(state_target):
    with seize(state_target.pid):
        xstate = ptrace.get_xstate(state_target.pid)
    info = arch.xstate_info(xstate)
    assert info.features & 0xE0 == 0xE0  # opmask, ZMM_Hi256, Hi16_ZMM
    assert info.size == len(xstate) >= 2432


def test_nanosleep_keeps_its_remaining_time_across_injected_syscalls(tmp_path):
    target = start_target([str(target_path("infect_blocked")), "nanosleep", "600"], tmp_path)
    try:
        time.sleep(0.2)
        with seize(target.pid):
            regs = ptrace.get_regs(target.pid)
            assert -arch.signed(regs.rax) == arch.ERESTART_RESTARTBLOCK
            RemoteSyscall.for_thread(target.pid, target.pid)(arch.NR_GETPID)
            time.sleep(0.1)
        ret, elapsed = wait_for_line(target.out, "nanosleep").split()[1:]
        assert ret == "0" and 590 <= float(elapsed) < 700
    finally:
        target.stop()


def test_refuses_own_process():
    with pytest.raises(OwnProcess, match=f"pid {os.getpid()}"):
        seize(os.getpid())


def test_refuses_missing_process():
    with pytest.raises(NoSuchProcess, match="pid 4194304"):
        seize(4194304)


def test_refuses_kernel_thread():
    with pytest.raises(KernelThread, match="pid 2: is a kernel thread"):
        seize(2)


def test_refuses_zombie():
    child = subprocess.Popen(["true"])
    try:
        while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        with pytest.raises(ZombieProcess, match=f"pid {child.pid}: is a zombie"):
            seize(child.pid)
    finally:
        child.wait()


def test_refuses_process_traced_by_someone_else(state_target):
    tracer = subprocess.Popen([sys.executable, "-c", "import sys; from runtime.kernel import ptrace; "
                               f"ptrace.seize({state_target.pid}); print('ok', flush=True); sys.stdin.read()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout.readline().strip() == "ok"
        with pytest.raises(AlreadyTraced, match=f"pid {state_target.pid}: already traced by pid {tracer.pid}"):
            seize(state_target.pid)
    finally:
        tracer.kill()
        tracer.wait()


def test_caller_without_ptrace_capability_is_denied():
    """A process of another uid needs CAP_SYS_PTRACE, which the caller gives up through its bounding set."""
    other = subprocess.Popen(["sleep", "60"], user=65534, group=65534)
    try:
        code = ("from runtime.infect.seize import seize\nfrom runtime.errors import AccessDenied\n"
                f"try:\n    seize({other.pid})\nexcept AccessDenied as e:\n    print(e)\n")
        out = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", sys.executable, "-c", code], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == f"pid {other.pid}: ptrace SEIZE of thread {other.pid} not permitted", out.stderr
    finally:
        other.kill()
        other.wait()
