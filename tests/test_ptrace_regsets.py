"""PTRACE_GETREGSET/SETREGSET for NT_PRSTATUS agree with GETREGS/SETREGS on a live, seized process."""

import ctypes
import subprocess

import pytest

from runtime.arch import x86_64 as arch
from runtime.infect.seize import seize
from runtime.kernel import ptrace


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_prstatus_regset_is_the_user_regs_struct(sleeper):
    with seize(sleeper) as seized:
        tid = seized.leader.tid
        regs = ptrace.get_regs(tid)
        prstatus = ptrace.get_regset(tid, arch.NT_PRSTATUS, 4096)
        assert prstatus == bytes(regs)


def test_prstatus_regset_write_is_seen_by_getregs(sleeper):
    with seize(sleeper) as seized:
        tid = seized.leader.tid
        saved = ptrace.get_regs(tid)
        changed = arch.UserRegs.from_buffer_copy(bytes(saved))
        changed.r12 = 0x1234_5678_9ABC_DEF0
        ptrace.set_regset(tid, arch.NT_PRSTATUS, bytes(changed))
        assert ptrace.get_regs(tid).r12 == 0x1234_5678_9ABC_DEF0
        ptrace.set_regs(tid, saved)
        assert bytes(ptrace.get_regs(tid)) == bytes(saved)
        assert ctypes.sizeof(arch.UserRegs) == 27 * 8
