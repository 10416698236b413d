"""Parasite infection: prepare -> infect -> call -> cure, every change registered as its undo step.

Why an ExitStack: each step that changes the target (a memfd, a mapping,
registers pointing into the parasite) registers the step that takes the
change back, the moment the change is made. Curing is then just closing the
stack, in reverse order, and it is the same code after a successful
session, after a failed command, a parasite that faulted, or an exception in
the caller's own `with` body.

Why it is safe to kill the runtime at any instant (docs/infection.md has
the whole story): before anything else the leader is parked on a return
path (remote_syscall.ReturnPath): its own rt_sigreturn sequence, on a frame
of its saved state below its stack's red zone. Injected syscalls return
there, and the parasite ends there too: when its socket closes it unmaps
its own area through a `syscall; ret` of the task's code whose `ret` lands
on that rt_sigreturn. A runtime that dies leaves at most the area and its
memfd's fd, named AREA_NAME, which the next infection removes. When the
runtime is alive it cancels that final rt_sigreturn (it would reset the
thread's restart_block, so an interrupted nanosleep would lose its
remaining time) and puts the saved state back itself at an interrupt stop.
"""

import contextlib
import ctypes
import mmap
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from runtime import faults
from runtime.arch import x86_64 as arch
from runtime.errors import InfectError
from runtime.infect import blobs
from runtime.infect.channel import Channel
from runtime.infect.parasite import Parasite
from runtime.infect.remote_syscall import ReturnPath
from runtime.infect.seize import Seized, seize, wait_for_stop
from runtime.infect.thread_run import ThreadRunner
from runtime.kernel import ptrace
from runtime.kernel.procfs.fds import list_fds
from runtime.kernel.procfs.files import read_link, read_text

CMD_ARGS_SIZE = 1 << 20  # room for 65k DUMP_PAGES iovecs per request
PAGE_SIZE = mmap.PAGESIZE
MFD_CLOEXEC = 0x1
SIGRETURN_CHASE_LIMIT = 10000  # syscall stops the parasite may make before its rt_sigreturn
AREA_NAME = "revive-parasite"  # the memfd's name: /proc shows a leftover as "/memfd:revive-parasite (deleted)"
LEFTOVER_PATH = f"/memfd:{AREA_NAME} (deleted)"


def is_leftover(path: str) -> bool:
    """Whether a mapping's or fd's path is a parasite area a dead runtime left behind."""
    return path == LEFTOVER_PATH


@dataclass(frozen=True)
class AreaLayout:
    """Offsets in the shared area: [image | bss | pad] [init args] [thread call] [command args]."""

    blob_size: int
    init_offset: int
    thread_call_offset: int
    cmd_offset: int
    cmd_size: int
    size: int


def plan_area(blob_size: int, init_size: int, thread_call_size: int) -> AreaLayout:
    init_offset = blob_size
    thread_call_offset = arch.align_up(init_offset + init_size, 64)
    cmd_offset = arch.align_up(thread_call_offset + thread_call_size, 64)
    size = arch.align_up(cmd_offset + CMD_ARGS_SIZE, PAGE_SIZE)
    return AreaLayout(blob_size, init_offset, thread_call_offset, cmd_offset, CMD_ARGS_SIZE, size)


class Infection:
    """One infection of a process's leader (or, once it exited, another thread); each step registers its undo."""

    def __init__(self, seized: Seized, undo: contextlib.ExitStack):
        self.seized = seized
        self.pid = seized.pid
        self.tid = seized.worker  # the task the parasite runs in: the leader, unless it exited
        self.undo = undo
        self.proto = blobs.protocol()
        self.blob = blobs.load("parasite")
        self.path = ReturnPath(self.tid, self.tid, AREA_NAME.encode() + b"\0")
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

    # -- prepare: park the leader on its way back, remove what a dead runtime left ------------

    def prepare(self) -> None:
        self.path.enter()
        self.undo.callback(self._parked(self.path.leave))
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Unmap and close the areas of earlier infections whose runtime died."""
        for line in read_text(self.tid, "maps").splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and is_leftover(fields[5]):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                self._check(self.path(arch.NR_MUNMAP, start, end - start), "munmap of a leftover area")
        for fd in list_fds(self.tid):
            if is_leftover(read_link(self.tid, f"fd/{fd}")):
                self._check(self.path(arch.NR_CLOSE, fd), "close of a leftover area's fd")

    # -- infect: shared area, blob, arguments, start ----------------------------------------

    def infect(self) -> None:
        init_type = self.proto.ParasiteInitArgs
        self.layout = plan_area(self.blob.memory_size, ctypes.sizeof(init_type),
                                ctypes.sizeof(self.proto.ParasiteThreadCall))
        self._map_area()
        self.blob.place(self.area, self.base)
        self.channel = Channel.listen(self.pid, self.check_task)
        self.undo.callback(self.channel.close)
        address = self.channel.address
        init = init_type(sun_len=2 + len(address), log_fd=-1,
                         cmd_args=self.base + self.layout.cmd_offset, cmd_args_size=self.layout.cmd_size,
                         sigreturn_sp=self.path.sigreturn_sp, area_base=self.base, area_size=self.layout.size,
                         syscall_ret=self.path.gadgets.syscall_ret,
                         thread_call=self.base + self.layout.thread_call_offset)
        ctypes.memmove(init.sun_path, address, len(address))
        self._write(self.layout.init_offset, bytes(init))
        self._start()
        self.channel.accept()
        threads = ThreadRunner(self.tid, self.proto, self.area, self.layout.thread_call_offset,
                               self.base + self.layout.thread_call_offset,
                               self.base + self.blob.exports["parasite_thread_start"], self.path.gadgets)
        self.parasite = Parasite(self.pid, self.tid, self.proto, self.channel, self.area, self.layout.cmd_offset,
                                 self.layout.cmd_size, threads)

    def _map_area(self) -> None:
        """A memfd mapped RWX-shared in the target and RW here: the blob and its arguments."""
        size = self.layout.size
        self.memfd = self._check(self.path(arch.NR_MEMFD_CREATE, self.path.strings_addr, MFD_CLOEXEC),
                                 "memfd_create")
        self.undo.callback(self._parked(self._close_memfd))
        faults.point("infect.memfd")
        self._check(self.path(arch.NR_FTRUNCATE, self.memfd, size), "ftruncate of the memfd")
        prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        self.base = self._check(self.path(arch.NR_MMAP, 0, size, prot, mmap.MAP_SHARED, self.memfd, 0),
                                "mmap of the memfd")
        # When the parasite ran, it unmapped the area itself on its way out; a munmap of a
        # range with nothing mapped succeeds, and nothing else ran in the task meanwhile.
        self.undo.callback(self._parked(lambda: self._check(self.path(arch.NR_MUNMAP, self.base, size),
                                                            "munmap of the area")))
        faults.point("infect.mmap")
        local = os.open(f"/proc/{self.tid}/fd/{self.memfd}", os.O_RDWR | os.O_CLOEXEC)
        try:
            self.area = mmap.mmap(local, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(local)
        self.undo.callback(self.area.close)
        self._close_memfd()
        faults.point("infect.closed")

    def _close_memfd(self) -> None:
        """The mapping keeps the memfd alive; the fd itself must not stay in the target's table."""
        if self.memfd is not None:
            fd, self.memfd = self.memfd, None
            self._check(self.path(arch.NR_CLOSE, fd), "close of the memfd")

    def _start(self) -> None:
        self.fds_before = frozenset(list_fds(self.tid))
        # From here a dead runtime leaves the task in the parasite, which finds no socket to
        # connect to and takes its own way out.
        self.path.start_code(self.base + self.blob.exports["parasite_head_start"], self.base + self.layout.init_offset)
        self.undo.callback(self._alive(self._retire))
        faults.point("infect.start")
        ptrace.cont(self.tid)
        self.running = True

    # -- while it runs ----------------------------------------------------------------------

    def check_task(self) -> None:
        """Raise InfectError if the leader stopped or died while running the parasite."""
        if not self.running:
            raise InfectError(self.pid, "the parasite's task is not running")
        stop = ptrace.wait(self.tid, nohang=True)
        while stop is not None and stop.signal == signal.SIGSTOP and not stop.exited:
            # SIGSTOP cannot be blocked; hold it back until the task is its own again.
            self.stop_requested = True
            ptrace.cont(self.tid)
            stop = ptrace.wait(self.tid, nohang=True)
        if stop is None:
            return
        self.running = False
        if stop.exited:
            self.dead = True
            raise InfectError(self.pid, f"the target {stop.describe()} while the parasite ran")
        rip = ptrace.get_regs(self.tid).rip
        where = "inside" if self._in_area(rip) else "outside"
        raise InfectError(self.pid, f"parasite task {stop.describe()} at rip {rip:#x} ({where} the parasite at"
                                    f" {self.base:#x})")

    # -- cure -------------------------------------------------------------------------------

    def _retire(self) -> None:
        """Stop the parasite and park the task on its return path again (undo of _start)."""
        if self.running:
            ptrace.interrupt(self.tid)
            if wait_for_stop(self.tid) is None:
                self.dead = True
                return
            self.running = False
        self.channel.close()
        faults.point("infect.retire")
        regs = ptrace.get_regs(self.tid)
        if not self._in_area(regs.rip) and not self.path.is_parked(regs):
            # The parasite already took its own way out (it lost its socket): the task is in
            # its own context and may have run on; its registers and stack are its own now.
            self.returned = True
            return
        self._chase_exit()
        faults.point("infect.cancelled")
        for fd in sorted(frozenset(list_fds(self.tid)) - self.fds_before):
            self._check(self.path(arch.NR_CLOSE, fd), f"close of fd {fd} the parasite left")

    def _chase_exit(self) -> None:
        """Follow the parasite out to its final rt_sigreturn and cancel it: the task is parked again."""
        self.path.chase_home(SIGRETURN_CHASE_LIMIT)  # a fault on the way: parked all the same

    def resend_stop(self) -> None:
        if (self.stop_requested or self.path.stop_held) and not self.dead:
            os.kill(self.pid, signal.SIGSTOP)

    # -- helpers ----------------------------------------------------------------------------

    def _alive(self, step):
        """An undo step that is skipped once the target has exited."""
        def run():
            if not (self.dead or self.path.exited):
                step()
        return run

    def _parked(self, step):
        """An undo step that needs the task on its return path: skipped once it went its own way."""
        def run():
            if not self.returned:
                step()
        return self._alive(run)

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
