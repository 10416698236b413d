"""Parasite infection: prepare -> infect -> call -> cure, every change registered as its undo step.

Why an ExitStack: each step that changes the target (blocking its signals,
a memfd, a mapping, registers pointing into the parasite) registers the step
that takes the change back, the moment the change is made. Curing is then
just closing the stack, in reverse order, and it is the same code after a
successful session, after a failed command, a parasite that faulted, or an
exception in the caller's own `with` body.

How the task gets back to its own context (docs/infection.md has the whole
story): the parasite ends, when its socket closes, with rt_sigreturn on a
frame built here from the task's saved registers, xstate and signal mask.
When the runtime is alive it follows the parasite to that rt_sigreturn and
cancels it (rt_sigreturn resets the thread's restart_block, so an
interrupted nanosleep would lose its remaining time), then puts the saved
state back itself at an interrupt stop, where the kernel applies its
ordinary syscall-restart rules. If the runtime has died, the rt_sigreturn
runs and the task continues from the frame.
"""

import contextlib
import ctypes
import errno
import mmap
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from runtime import arch_x86_64 as arch
from runtime import blobs, ptrace
from runtime.channel import Channel
from runtime.errors import InfectError
from runtime.parasite import Parasite
from runtime.procfs.fds import list_fds
from runtime.remote_syscall import RemoteSyscall, settle, vdso_range
from runtime.seize import Seized, seize, wait_for_stop

CMD_ARGS_SIZE = 1 << 20  # room for 65k DUMP_PAGES iovecs per request
PAGE_SIZE = mmap.PAGESIZE
MFD_CLOEXEC = 0x1
SIGRETURN_CHASE_LIMIT = 10000  # syscall stops the parasite may make before its rt_sigreturn
EFLAGS_TF = 0x100
EFLAGS_DF = 0x400


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


@dataclass(frozen=True)
class SavedContext:
    """The leader's own state before infection: what cure puts back."""

    regs: arch.UserRegs
    xstate: bytes
    sigmask: int


@dataclass(frozen=True)
class AreaLayout:
    """Offsets in the shared area: [image | bss | pad] [init args] [command args] [rt_sigframe]."""

    blob_size: int
    init_offset: int
    cmd_offset: int
    cmd_size: int
    frame_offset: int
    size: int


def plan_area(blob_size: int, init_size: int, xstate_size: int) -> AreaLayout:
    init_offset = blob_size
    cmd_offset = _align(init_offset + init_size, 64)
    frame_offset = _align(cmd_offset + CMD_ARGS_SIZE, arch.XSTATE_ALIGN)
    size = _align(frame_offset + arch.rt_sigframe_size(xstate_size), PAGE_SIZE)
    return AreaLayout(blob_size, init_offset, cmd_offset, CMD_ARGS_SIZE, frame_offset, size)


class Infection:
    """One infection of one process's leader thread; its steps register their undo in `undo`."""

    def __init__(self, seized: Seized, undo: contextlib.ExitStack):
        self.seized = seized
        self.pid = seized.pid
        self.undo = undo
        self.proto = blobs.protocol()
        self.blob = blobs.load("parasite")
        self.remote = RemoteSyscall.for_thread(self.pid, self.pid)
        self.context: SavedContext | None = None
        self.layout: AreaLayout | None = None
        self.base = 0
        self.memfd: int | None = None  # the memfd's number in the target while it is open there
        self.area: mmap.mmap | None = None
        self.channel: Channel | None = None
        self.parasite: Parasite | None = None
        self.fds_before: frozenset[int] = frozenset()
        self.running = False  # the leader runs parasite code (not in a ptrace stop)
        self.dead = False  # the target exited; nothing is left to undo in it
        self.returned = False  # the task already went back to its own context by itself
        self.stop_requested = False  # a SIGSTOP arrived meanwhile; it is re-sent after cure

    # -- prepare: save what cure restores -------------------------------------------------

    def prepare(self) -> None:
        pid = self.pid
        self.context = SavedContext(ptrace.get_regs(pid), ptrace.get_xstate(pid), ptrace.get_sigmask(pid))
        self.undo.callback(self._alive(self._restore_context))
        # Nothing may be delivered to the task while it runs foreign code.
        ptrace.set_sigmask(pid, arch.SIGSET_ALL)

    def _restore_context(self) -> None:
        if self.returned:
            return
        ptrace.set_regs(self.pid, self.context.regs)
        ptrace.set_xstate(self.pid, self.context.xstate)
        ptrace.set_sigmask(self.pid, self.context.sigmask)

    # -- infect: shared area, blob, arguments, start ----------------------------------------

    def infect(self) -> None:
        init_type = self.proto.ParasiteInitArgs
        self.layout = plan_area(self.blob.memory_size, ctypes.sizeof(init_type), len(self.context.xstate))
        self._map_area()
        self.blob.place(self.area, self.base)
        self.channel = Channel.listen(self.pid, self.check_task)
        self.undo.callback(self.channel.close)
        frame, sigreturn_sp = arch.build_rt_sigframe(arch.resume_registers(self.context.regs), self.context.xstate,
                                                     self.context.sigmask, self.base + self.layout.frame_offset)
        self._write(self.layout.frame_offset, frame)
        address = self.channel.address
        init = init_type(sun_len=2 + len(address), log_fd=-1,
                         cmd_args=self.base + self.layout.cmd_offset, cmd_args_size=self.layout.cmd_size,
                         sigreturn_sp=sigreturn_sp)
        ctypes.memmove(init.sun_path, address, len(address))
        self._write(self.layout.init_offset, bytes(init))
        self._start()
        self.channel.accept()
        self.parasite = Parasite(self.pid, self.proto, self.channel, self.area, self.layout.cmd_offset,
                                 self.layout.cmd_size)

    def _map_area(self) -> None:
        """A memfd mapped RWX-shared in the target and RW here: the blob and its arguments."""
        size = self.layout.size
        self.memfd = self._check(self.remote(arch.NR_MEMFD_CREATE, self._empty_string(), MFD_CLOEXEC),
                                 "memfd_create")
        self.undo.callback(self._alive(self._close_memfd))
        self._check(self.remote(arch.NR_FTRUNCATE, self.memfd, size), "ftruncate of the memfd")
        prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        self.base = self._check(self.remote(arch.NR_MMAP, 0, size, prot, mmap.MAP_SHARED, self.memfd, 0),
                                "mmap of the memfd")
        self.undo.callback(self._alive(lambda: self.remote(arch.NR_MUNMAP, self.base, size)))
        local = os.open(f"/proc/{self.pid}/fd/{self.memfd}", os.O_RDWR | os.O_CLOEXEC)
        try:
            self.area = mmap.mmap(local, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(local)
        self.undo.callback(self.area.close)
        self._close_memfd()

    def _empty_string(self) -> int:
        """An address in the target holding a NUL byte: memfd_create needs a name there.

        The vDSO is an ELF image and every ELF header has NUL bytes, so no
        byte of the target needs to be written for it.
        """
        start, end = vdso_range(self.pid)
        return start + ptrace.read_memory(self.pid, start, end - start).index(b"\0")

    def _close_memfd(self) -> None:
        """The mapping keeps the memfd alive; the fd itself must not stay in the target's table."""
        if self.memfd is not None:
            fd, self.memfd = self.memfd, None
            self._check(self.remote(arch.NR_CLOSE, fd), "close of the memfd")

    def _start(self) -> None:
        regs = arch.copy_regs(self.context.regs)
        regs.rip = self.base + self.blob.exports["parasite_head_start"]
        regs.rdi = self.base + self.layout.init_offset
        regs.rax = 0
        regs.orig_rax = arch.SIGSET_ALL  # -1: the task's interrupted syscall must not be restarted now
        regs.eflags &= ~(EFLAGS_TF | EFLAGS_DF)
        self.fds_before = frozenset(list_fds(self.pid))
        ptrace.set_regs(self.pid, regs)
        self.undo.callback(self._alive(self._retire))
        ptrace.cont(self.pid)
        self.running = True

    # -- while it runs ----------------------------------------------------------------------

    def check_task(self) -> None:
        """Raise InfectError if the leader stopped or died while running the parasite."""
        if not self.running:
            raise InfectError(self.pid, "the parasite's task is not running")
        stop = ptrace.wait(self.pid, nohang=True)
        while stop is not None and stop.signal == signal.SIGSTOP and not stop.exited:
            # SIGSTOP cannot be blocked; hold it back until the task is its own again.
            self.stop_requested = True
            ptrace.cont(self.pid)
            stop = ptrace.wait(self.pid, nohang=True)
        if stop is None:
            return
        self.running = False
        if stop.exited:
            self.dead = True
            raise InfectError(self.pid, f"the target {stop.describe()} while the parasite ran")
        rip = ptrace.get_regs(self.pid).rip
        where = "inside" if self._in_area(rip) else "outside"
        raise InfectError(self.pid, f"parasite task {stop.describe()} at rip {rip:#x} ({where} the parasite at"
                                    f" {self.base:#x})")

    # -- cure -------------------------------------------------------------------------------

    def _retire(self) -> None:
        """Stop the parasite and take the task back out of it (undo of _start)."""
        if self.running:
            ptrace.interrupt(self.pid)
            if wait_for_stop(self.pid) is None:
                self.dead = True
                return
            self.running = False
        self.channel.close()
        rip = ptrace.get_regs(self.pid).rip
        if not self._in_area(rip):
            # The parasite already ran its rt_sigreturn (it lost its socket): the task is in
            # its own context and may have run on; its registers are its own now.
            self.returned = True
            return
        self._chase_sigreturn()
        for fd in sorted(frozenset(list_fds(self.pid)) - self.fds_before):
            self.remote(arch.NR_CLOSE, fd)

    def _chase_sigreturn(self) -> None:
        """Follow the parasite to its rt_sigreturn and cancel it; the saved state is put back by cure."""
        for _ in range(SIGRETURN_CHASE_LIMIT):
            ptrace.syscall(self.pid)
            stop = ptrace.wait(self.pid)
            if stop.exited:
                self.dead = True
                raise InfectError(self.pid, f"the target {stop.describe()} while the parasite was exiting")
            if not stop.is_syscall_stop:
                # A fault on the way out: the task is stopped inside the kernel's signal
                # handling, where restoring its registers is as good as an interrupt stop.
                return
            regs = ptrace.get_regs(self.pid)
            if arch.signed(regs.orig_rax) == arch.NR_RT_SIGRETURN and arch.signed(regs.rax) == -errno.ENOSYS:
                regs.orig_rax = arch.SIGSET_ALL  # skip it: the kernel runs no syscall for -1
                ptrace.set_regs(self.pid, regs)
                ptrace.syscall(self.pid)
                if not ptrace.wait(self.pid).is_syscall_stop:
                    raise InfectError(self.pid, "no syscall-exit stop after the cancelled rt_sigreturn")
                settle(self.pid)
                return
        raise InfectError(self.pid, f"parasite made {SIGRETURN_CHASE_LIMIT} syscalls without reaching rt_sigreturn")

    def resend_stop(self) -> None:
        if self.stop_requested and not self.dead:
            os.kill(self.pid, signal.SIGSTOP)

    # -- helpers ----------------------------------------------------------------------------

    def _alive(self, step):
        """An undo step that is skipped once the target has exited."""
        def run():
            if not self.dead:
                step()
        return run

    def _in_area(self, address: int) -> bool:
        return self.layout is not None and self.base <= address < self.base + self.layout.size

    def _write(self, offset: int, data: bytes) -> None:
        self.area[offset:offset + len(data)] = data

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            raise InfectError(self.pid, f"injected {what} failed: {os.strerror(-result)}")
        return result


@contextlib.contextmanager
def infect(target: int | Seized, leave_stopped: bool = False) -> Iterator[Parasite]:
    """Run the parasite in a process for the duration of the block; always cured afterwards.

    target: a PID (seized here and released after cure; leave_stopped makes
    the process group-stopped after release) or a Seized process the caller
    keeps stopped after cure.
    """
    with contextlib.ExitStack() as undo:
        if isinstance(target, Seized):
            seized = target
        else:
            seized = seize(target)
            undo.callback(lambda: seized.release(leave_stopped=leave_stopped))
        infection = Infection(seized, undo)
        undo.callback(infection.resend_stop)
        infection.prepare()
        infection.infect()
        yield infection.parasite
        infection.parasite.fini()
