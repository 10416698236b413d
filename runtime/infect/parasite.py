"""The parasite's commands as Python methods, and the types of their results.

Why a class of its own: infect.py owns getting the parasite in and out;
this module owns what can be asked of it once it runs. Each method writes
its argument struct (from the shared protocol declaration) into the
command-args region of the shared memfd, sends one request, waits for the
one reply envelope, and reads the result back from the same region.
"""

import ctypes
import fcntl
import mmap
import os
from dataclasses import dataclass
from types import ModuleType

from runtime.errors import InfectError
from runtime.images.model import ITimer, RLimit, SigAction, SigAltStack
from runtime.infect.channel import Channel
from runtime.infect.thread_run import ThreadRunner

PAGE_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: fewer round trips between vmsplice and splice


@dataclass(frozen=True)
class Misc:
    """What the process sees of itself (ids in its own namespaces)."""

    pid: int
    tid: int
    ppid: int
    pgid: int
    sid: int
    umask: int
    dumpable: int
    personality: int
    brk: int
    rlimits: tuple[RLimit, ...]
    itimers: tuple[ITimer, ...]  # REAL, VIRTUAL, PROF
    prctl: dict[str, int]  # parasite_controls by field name: each PR_GET_*'s result, negative an errno


@dataclass(frozen=True)
class ThreadState:
    """The parasite thread's own signal state, asked from inside."""

    tid: int
    blocked: int  # the task's own mask (saved before the parasite blocked everything)
    altstack: SigAltStack
    clear_child_tid: int
    prctl: dict[str, int]  # its per-thread parasite_controls (task/controls.PER_THREAD_PRCTL, pdeath_sig)


@dataclass(frozen=True)
class Iovec:
    base: int
    len: int


def _controls(controls: ctypes.Structure) -> dict[str, int]:
    return {name: getattr(controls, name) for name, _ in controls._fields_}


class Parasite:
    """A running parasite; one method per command."""

    def __init__(self, pid: int, tid: int, proto: ModuleType, channel: Channel, area: mmap.mmap,
                 cmd_offset: int, cmd_size: int, threads: ThreadRunner):
        self.pid = pid
        self.tid = tid  # the thread serving the commands
        self.proto = proto
        self.channel = channel
        self.area = area
        self.cmd_offset = cmd_offset
        self.cmd_size = cmd_size
        self.threads = threads
        self._names = {v: k for k, v in vars(proto).items() if k.startswith("PARASITE_CMD_")}

    def noop(self) -> None:
        self._call(self.proto.PARASITE_CMD_NOOP)

    def echo(self, value: int) -> int:
        self._put(self.proto.ParasiteEchoArgs(value=value, echoed=0))
        self._call(self.proto.PARASITE_CMD_ECHO)
        return self._get(self.proto.ParasiteEchoArgs).echoed

    def get_misc(self) -> Misc:
        self._call(self.proto.PARASITE_CMD_GET_MISC)
        m = self._get(self.proto.ParasiteMisc)
        return Misc(m.pid, m.tid, m.ppid, m.pgid, m.sid, m.umask, m.dumpable, m.personality, m.brk,
                    tuple(RLimit(r.cur, r.max) for r in m.rlimits),
                    tuple(ITimer(t.interval_sec, t.interval_usec, t.value_sec, t.value_usec) for t in m.itimers),
                    _controls(m.controls))

    def dump_sigactions(self) -> tuple[SigAction, ...]:
        """All 64 actions; [i] is signal i + 1 (SIGKILL and SIGSTOP read as default)."""
        self._call(self.proto.PARASITE_CMD_DUMP_SIGACTIONS)
        actions = self._get(self.proto.ParasiteSigactions).actions
        return tuple(SigAction(a.handler, a.flags, a.restorer, a.mask) for a in actions)

    def dump_thread(self, tid: int | None = None) -> ThreadState:
        """What thread tid (default: the one serving commands) can tell only about itself.

        The serving thread answers the DUMP_THREAD command; any other thread
        runs the parasite's per-thread part itself (runtime/infect/thread_run.py).
        """
        if tid is None or tid == self.tid:
            self._call(self.proto.PARASITE_CMD_DUMP_THREAD)
            t = self._get(self.proto.ParasiteThread)
        else:
            t = self.threads.dump_thread(tid)
        return ThreadState(t.tid, t.blocked, SigAltStack(t.ss_sp, t.ss_size, t.ss_flags), t.clear_child_tid,
                           _controls(t.controls))

    def dump_posix_timers(self, ids: list[int]) -> list:
        """Each timer's parasite_posix_timer (timer_gettime's spec, the overrun), in the order of ids."""
        header, timer = self.proto.ParasitePosixTimers, self.proto.ParasitePosixTimer
        if ctypes.sizeof(header) + ctypes.sizeof(timer) * len(ids) > self.cmd_size:
            raise InfectError(self.pid, f"DUMP_POSIX_TIMERS: {len(ids)} timers do not fit the command area")
        self._put(header(nr_timers=len(ids)), (timer * len(ids))(*(timer(id=i) for i in ids)))
        self._call(self.proto.PARASITE_CMD_DUMP_POSIX_TIMERS)
        return list((timer * len(ids)).from_buffer_copy(self.area, self.cmd_offset + ctypes.sizeof(header)))

    def drain_fds(self, fds: list[int]) -> list[int]:
        """Copies of the target's fds, in order, as descriptors of this process (caller closes them)."""
        header = self.proto.ParasiteDrainFds
        if ctypes.sizeof(header) + 4 * len(fds) > self.cmd_size:
            raise InfectError(self.pid, f"DRAIN_FDS: {len(fds)} fds do not fit the command area")
        self._put(header(nr_fds=len(fds)), (ctypes.c_int32 * len(fds))(*fds))
        self.channel.send(self._request(self.proto.PARASITE_CMD_DRAIN_FDS))
        received: list[int] = []
        try:
            while len(received) < len(fds):
                data, got = self.channel.receive(4, "DRAIN_FDS fds", self.proto.PARASITE_MAX_FDS_PER_MSG)
                received.extend(got)
                if int.from_bytes(data[:4], "little") != len(got):
                    raise InfectError(self.pid, f"DRAIN_FDS: message announced {int.from_bytes(data[:4], 'little')}"
                                                f" fds, carried {len(got)}")
            self._reply(self.proto.PARASITE_CMD_DRAIN_FDS)
        except BaseException:
            for fd in received:
                os.close(fd)
            raise
        return received

    def dump_pages(self, iovecs: list[Iovec], out_fd: int) -> int:
        """Write the target's memory at iovecs, in order, to out_fd; returns bytes written.

        The parasite vmsplices the pages into a pipe and this process
        splices the pipe into out_fd, so page data never enters Python.
        """
        header = self.proto.ParasiteDumpPages
        per_batch = (self.cmd_size - ctypes.sizeof(header)) // ctypes.sizeof(self.proto.KIovec)
        total = 0
        for i in range(0, len(iovecs), per_batch):
            total += self._dump_batch(iovecs[i:i + per_batch], out_fd)
        return total

    def _dump_batch(self, iovecs: list[Iovec], out_fd: int) -> int:
        iov_type = self.proto.KIovec
        nbytes = sum(v.len for v in iovecs)
        self._put(self.proto.ParasiteDumpPages(nr_iovs=len(iovecs), nr_bytes=nbytes),
                  (iov_type * len(iovecs))(*(iov_type(v.base, v.len) for v in iovecs)))
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, PAGE_PIPE_SIZE)
            self.channel.send(self._request(self.proto.PARASITE_CMD_DUMP_PAGES), pipe_w)
            # Only the parasite holds the write end now: if it goes, splice sees EOF.
            os.close(pipe_w)
            pipe_w = -1
            moved = self.channel.splice(pipe_r, out_fd, nbytes)
            self._reply(self.proto.PARASITE_CMD_DUMP_PAGES)
        finally:
            os.close(pipe_r)
            if pipe_w >= 0:
                os.close(pipe_w)
        if moved != nbytes:
            raise InfectError(self.pid, f"DUMP_PAGES: {moved} of {nbytes} bytes arrived")
        return moved

    def fini(self) -> None:
        self._call(self.proto.PARASITE_CMD_FINI)

    def _put(self, *parts: ctypes.Structure | ctypes.Array) -> None:
        data = b"".join(bytes(p) for p in parts)
        self.area[self.cmd_offset:self.cmd_offset + len(data)] = data

    def _get(self, cls: type[ctypes.Structure]) -> ctypes.Structure:
        return cls.from_buffer_copy(self.area, self.cmd_offset)

    def _request(self, cmd: int) -> bytes:
        return bytes(self.proto.ParasiteRequest(cmd=cmd))

    def _call(self, cmd: int) -> None:
        self.channel.send(self._request(cmd))
        self._reply(cmd)

    def _reply(self, cmd: int) -> None:
        name = self._names.get(cmd, str(cmd))
        reply_type = self.proto.ParasiteReply
        data, _ = self.channel.receive(ctypes.sizeof(reply_type), f"the reply to {name}")
        if len(data) != ctypes.sizeof(reply_type):
            raise InfectError(self.pid, f"{name}: reply of {len(data)} bytes, expected {ctypes.sizeof(reply_type)}")
        reply = reply_type.from_buffer_copy(data)
        if reply.cmd != cmd or reply.ack != 1:
            raise InfectError(self.pid, f"{name}: reply for command {reply.cmd} (ack {reply.ack})")
        if reply.err:
            raise InfectError(self.pid, f"parasite command {name} failed: {os.strerror(-reply.err)}")
