"""The thin ptrace layer: one function per request, over glibc's ptrace() through the one libc handle.

Why: python-ptrace has no SEIZE/INTERRUPT/LISTEN, no register sets for the
xsave area, no signal-mask or rseq requests, and importing its bindings
runs `ldconfig -p` (its find_library), tens of milliseconds of every
command; the raw call is one ctypes prototype. Every request is here, in one
place, and every failure is translated once into a PtraceError naming the
task and the request, so no caller sees a bare OSError. Waiting is here too (waitpid with __WALL, because threads
are not children of the tracer and are invisible to a plain waitpid).
"""

import ctypes
import os
import signal
from dataclasses import dataclass

from runtime.arch import x86_64 as arch
from runtime.errors import PtraceError
from runtime.kernel.libc import libc as _libc

PTRACE_PEEKDATA = 2
PTRACE_POKEDATA = 5
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F  # Linux 5.13, newer than the installed headers

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128
PTRACE_PEEKSIGINFO_SHARED = 1

__WALL = 0x40000000
SYSCALL_STOP_SIGNAL = signal.SIGTRAP | 0x80  # with PTRACE_O_TRACESYSGOOD
GROUP_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)

_NAMES = {v: k for k, v in globals().items() if k.startswith("PTRACE_") and not k.startswith(("PTRACE_O_", "PTRACE_EVENT"))}


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _PeekSiginfoArgs(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("nr", ctypes.c_int32)]


class _RseqConfiguration(ctypes.Structure):
    _fields_ = [("rseq_abi_pointer", ctypes.c_uint64), ("rseq_abi_size", ctypes.c_uint32),
                ("signature", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


@dataclass(frozen=True)
class RseqConfiguration:
    address: int
    size: int
    signature: int
    flags: int


# long ptrace(request, pid, addr, data): every argument passed as a machine word; the result unsigned, as a
# PEEK returns a word (-1 is both a word and the failure, told apart by errno).
_libc.ptrace.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.ptrace.restype = ctypes.c_ulong
_FAILED = ctypes.c_ulong(-1).value


def _call(request: int, tid: int, addr: int = 0, data: int = 0, peek: bool = False) -> int:
    ctypes.set_errno(0)
    result = _libc.ptrace(request, tid, addr, data)
    if result == _FAILED:
        errno = ctypes.get_errno()
        if errno or not peek:
            raise PtraceError(tid, _NAMES.get(request, hex(request)), errno)
    return result


def seize(tid: int, options: int = PTRACE_O_TRACESYSGOOD) -> None:
    """Attach without stopping and without sending SIGSTOP (unlike PTRACE_ATTACH).

    No PTRACE_O_EXITKILL: if the runtime dies, the kernel detaches and the
    target must live on.
    """
    _call(PTRACE_SEIZE, tid, 0, options)


def set_options(tid: int, options: int) -> None:
    _call(PTRACE_SETOPTIONS, tid, 0, options)


def interrupt(tid: int) -> None:
    _call(PTRACE_INTERRUPT, tid)


def listen(tid: int) -> None:
    _call(PTRACE_LISTEN, tid)


def cont(tid: int, sig: int = 0) -> None:
    _call(PTRACE_CONT, tid, 0, sig)


def syscall(tid: int, sig: int = 0) -> None:
    _call(PTRACE_SYSCALL, tid, 0, sig)


def detach(tid: int, sig: int = 0) -> None:
    _call(PTRACE_DETACH, tid, 0, sig)


def get_regs(tid: int) -> arch.UserRegs:
    regs = arch.UserRegs()
    _call(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return regs


def set_regs(tid: int, regs: arch.UserRegs) -> None:
    _call(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


def get_regset(tid: int, note: int, size: int) -> bytes:
    """PTRACE_GETREGSET: the kernel shrinks the iovec to the set's real size."""
    buf = ctypes.create_string_buffer(size)
    iov = _Iovec(ctypes.addressof(buf), size)
    _call(PTRACE_GETREGSET, tid, note, ctypes.addressof(iov))
    return buf.raw[:iov.len]


def set_regset(tid: int, note: int, data: bytes) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    iov = _Iovec(ctypes.addressof(buf), len(data))
    _call(PTRACE_SETREGSET, tid, note, ctypes.addressof(iov))


def get_xstate(tid: int) -> bytes:
    """The full user xsave area (x87, SSE, AVX, AVX-512, PKRU ...), sized by the kernel."""
    return get_regset(tid, arch.NT_X86_XSTATE, arch.XSTATE_PROBE_SIZE)


def set_xstate(tid: int, xstate: bytes) -> None:
    set_regset(tid, arch.NT_X86_XSTATE, xstate)


def get_sigmask(tid: int) -> int:
    mask = ctypes.c_uint64()
    _call(PTRACE_GETSIGMASK, tid, ctypes.sizeof(mask), ctypes.addressof(mask))
    return mask.value


def set_sigmask(tid: int, mask: int) -> None:
    value = ctypes.c_uint64(mask & arch.SIGSET_ALL)
    _call(PTRACE_SETSIGMASK, tid, ctypes.sizeof(value), ctypes.addressof(value))


def get_siginfo(tid: int) -> bytes:
    buf = ctypes.create_string_buffer(arch.SIGINFO_SIZE)
    _call(PTRACE_GETSIGINFO, tid, 0, ctypes.addressof(buf))
    return buf.raw


def peek_siginfo(tid: int, shared: bool, start: int = 0, count: int = 32) -> list[bytes]:
    """Raw 128-byte siginfos queued for the thread (or, shared, for the whole process)."""
    buf = ctypes.create_string_buffer(arch.SIGINFO_SIZE * count)
    args = _PeekSiginfoArgs(start, PTRACE_PEEKSIGINFO_SHARED if shared else 0, count)
    got = _call(PTRACE_PEEKSIGINFO, tid, ctypes.addressof(args), ctypes.addressof(buf))
    return [buf.raw[i * arch.SIGINFO_SIZE:(i + 1) * arch.SIGINFO_SIZE] for i in range(got)]


def get_rseq_configuration(tid: int) -> RseqConfiguration:
    conf = _RseqConfiguration()
    _call(PTRACE_GET_RSEQ_CONFIGURATION, tid, ctypes.sizeof(conf), ctypes.addressof(conf))
    return RseqConfiguration(conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature, conf.flags)


def peek_data(tid: int, addr: int) -> int:
    return _call(PTRACE_PEEKDATA, tid, addr, 0, peek=True)


def poke_data(tid: int, addr: int, word: int) -> None:
    _call(PTRACE_POKEDATA, tid, addr, word & arch.U64_MAX)


@dataclass(frozen=True)
class Stop:
    """One waitpid report about a traced task."""

    tid: int
    status: int

    @property
    def exited(self) -> bool:
        return os.WIFEXITED(self.status) or os.WIFSIGNALED(self.status)

    @property
    def signal(self) -> int:
        """The stop signal (0 unless stopped)."""
        return os.WSTOPSIG(self.status) if os.WIFSTOPPED(self.status) else 0

    @property
    def event(self) -> int:
        return (self.status >> 16) & 0xFF if os.WIFSTOPPED(self.status) else 0

    @property
    def is_syscall_stop(self) -> bool:
        return self.signal == SYSCALL_STOP_SIGNAL

    @property
    def is_event_stop(self) -> bool:
        """PTRACE_INTERRUPT stop or group-stop of a seized task (PTRACE_EVENT_STOP)."""
        return self.event == PTRACE_EVENT_STOP

    @property
    def is_exit_stop(self) -> bool:
        """PTRACE_EVENT_EXIT (with PTRACE_O_TRACEEXIT): the task is exiting by itself, its fds still open."""
        return self.event == PTRACE_EVENT_EXIT

    @property
    def is_group_stop(self) -> bool:
        return self.is_event_stop and self.signal in GROUP_STOP_SIGNALS

    @property
    def is_signal_delivery(self) -> bool:
        return os.WIFSTOPPED(self.status) and self.event == 0 and not self.is_syscall_stop

    def describe(self) -> str:
        if os.WIFEXITED(self.status):
            return f"exited with status {os.WEXITSTATUS(self.status)}"
        if os.WIFSIGNALED(self.status):
            return f"killed by {signal.Signals(os.WTERMSIG(self.status)).name}"
        if self.is_syscall_stop:
            return "stopped at a syscall"
        if self.is_event_stop:
            return f"in a ptrace event stop ({_signame(self.signal)})"
        if self.is_exit_stop:
            return "exiting"
        return f"stopped by {_signame(self.signal)}"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def wait(tid: int, nohang: bool = False) -> Stop | None:
    """waitpid(tid, __WALL): the next stop or exit of that task (None if nohang and none yet)."""
    try:
        got, status = os.waitpid(tid, __WALL | (os.WNOHANG if nohang else 0))
    except ChildProcessError as exc:
        raise PtraceError(tid, "waitpid", exc.errno or 0, "not traced by this process") from exc
    if got == 0:
        return None
    return Stop(tid, status)
