"""The rt_sigframe builder, checked by the kernel's own rt_sigreturn in a live target."""

import mmap
import struct

import pytest

from infect_support import assert_keeps_ticking, comparable_xstate
from runtime.arch import x86_64 as arch
from runtime.infect.remote_syscall import RemoteSyscall, settle
from runtime.infect.seize import seize
from runtime.kernel import ptrace

GPRS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base")


def test_frame_layout_constants_match_the_kernel_abi():
    assert arch.SIGCONTEXT_OFFSET == 48 and arch.SIGMASK_OFFSET == 304 and arch.RT_SIGFRAME_SIZE == 440
    frame, sp = arch.build_rt_sigframe(arch.UserRegs(rip=0x1234, cs=0x33, ss=0x2B), b"\0" * 2432, 0x5, 0x10000)
    assert sp == 0x10008 and len(frame) == arch.rt_sigframe_size(2432)
    fp = struct.unpack_from("<Q", frame, arch.SIGCONTEXT_OFFSET + 184)[0]
    assert fp % 64 == 0 and fp > 0x10000 + arch.RT_SIGFRAME_SIZE - 64
    magic1, extended, _features, size = struct.unpack_from("<IIQI", frame, fp - 0x10000 + 464)
    assert (magic1, extended, size) == (arch.FP_XSTATE_MAGIC1, 2436, 2432)
    assert struct.unpack_from("<I", frame, fp - 0x10000 + 2432)[0] == arch.FP_XSTATE_MAGIC2
    with pytest.raises(ValueError, match="aligned"):
        arch.build_rt_sigframe(arch.UserRegs(), None, 0, 0x10008)


def test_kernel_rt_sigreturn_loads_registers_xstate_and_mask_from_the_frame(state_target):
    pid = state_target.pid
    with seize(pid):
        saved, xstate, mask = ptrace.get_regs(pid), ptrace.get_xstate(pid), ptrace.get_sigmask(pid)
        remote = RemoteSyscall.for_thread(pid, pid)
        area = remote(arch.NR_MMAP, 0, 16384, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1 & arch.U64_MAX, 0)
        assert area > 0
        resume = arch.resume_registers(saved)
        frame, sigreturn_sp = arch.build_rt_sigframe(resume, xstate, mask, area)
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(area)
            mem.write(frame)
        # Wipe the vector state and the mask, so only the frame can bring them back.
        blank = bytearray(xstate)
        blank[512:520] = bytes(8)  # xstate_bv 0: every component in its init state
        ptrace.set_xstate(pid, bytes(blank))
        assert ptrace.get_xstate(pid) != xstate
        ptrace.set_sigmask(pid, 0)
        regs = arch.copy_regs(saved)
        regs.rip, regs.rax, regs.rsp = remote.syscall_ip, arch.NR_RT_SIGRETURN, sigreturn_sp
        regs.orig_rax = arch.NO_SYSCALL
        regs.r12 = regs.rbx = 0
        ptrace.set_regs(pid, regs)
        for _ in range(2):
            ptrace.syscall(pid)
            assert ptrace.wait(pid).is_syscall_stop
        after = ptrace.get_regs(pid)
        assert {n: getattr(after, n) for n in GPRS} == {n: getattr(resume, n) for n in GPRS}
        assert comparable_xstate(ptrace.get_xstate(pid)) == comparable_xstate(xstate)
        assert ptrace.get_sigmask(pid) == mask
        settle(pid)
        ptrace.set_regs(pid, saved)
        assert remote(arch.NR_MUNMAP, area, 16384) == 0
    assert_keeps_ticking(state_target.out)


def test_resume_registers_restart_interrupted_syscalls():
    regs = arch.UserRegs(rip=0x1002, orig_rax=0, rax=-arch.ERESTARTSYS & arch.SIGSET_ALL)
    assert (arch.resume_registers(regs).rip, arch.resume_registers(regs).rax) == (0x1000, 0)
    regs.rax, regs.orig_rax = -arch.ERESTART_RESTARTBLOCK & arch.SIGSET_ALL, arch.NR_NANOSLEEP
    assert (arch.resume_registers(regs).rip, arch.resume_registers(regs).rax) == (0x1000, arch.NR_RESTART_SYSCALL)
    regs.rax = -4 & arch.SIGSET_ALL  # -EINTR is a result, not a restart
    assert arch.resume_registers(regs).rip == 0x1002
    regs.orig_rax = arch.SIGSET_ALL  # not in a syscall at all
    regs.rax = -arch.ERESTARTSYS & arch.SIGSET_ALL
    assert arch.resume_registers(regs).rip == 0x1002
