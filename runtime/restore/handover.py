"""The hand-over: from the restorer's trap to a task running in its own context, and what its end says.

Why apart: this is the one part of a restore that follows the new task
instruction by instruction (ptrace stops, the restorer's last syscalls,
rt_sigreturn) and reads the child's last words when it fails; it knows
nothing of how the image was planned.
"""

import ctypes
import errno
import os
import signal
import threading

from runtime.arch import x86_64 as arch
from runtime.errors import PtraceError, RestoreError, shorten
from runtime.infect import blobs
from runtime.infect.remote_syscall import RemoteSyscall, settle
from runtime.kernel import ptrace
from runtime.restore.child import CHILD_ERROR_TAG
from runtime.restore.restorer_args import Area, describe_advice_failure

# The child's error pipe: bytes kept, characters shown, and how long to wait for the end of
# a message once the child has exited (its write end is closed then, so the drain ends at once).
ERROR_BYTES_MAX = 4096
ERROR_TEXT_MAX = 400
ERROR_DRAIN_SECONDS = 5.0


class ErrorChannel:
    """The read end of the child's error pipe, drained by a thread from the clone on.

    Why drained as it comes: the child writes its error, then exits, and
    the parent learns of the exit from waitpid. Were the parent to read only
    after the exit, a message longer than the pipe buffer (64 KiB; a hostile
    image's path can be longer) would block the child in write() while the
    parent waits for it to exit, forever. The thread keeps the first
    ERROR_BYTES_MAX bytes, more than any message needs, and drops the rest.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._data = bytearray()
        self._thread = threading.Thread(target=self._drain, name="restore-errors", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._fd, 1 << 16):
                self._data += chunk[:max(ERROR_BYTES_MAX - len(self._data), 0)]
        finally:
            os.close(self._fd)

    def read(self) -> bytes:
        """What the child wrote, once it has exited (its end of the pipe closed with it)."""
        self._thread.join(ERROR_DRAIN_SECONDS)
        return bytes(self._data)


def failure(child: int, errors, how: str) -> RestoreError:
    """What the child or the restorer said before it exited, as a RestoreError; how: how it ended, else."""
    data = errors.read()
    if data.startswith(CHILD_ERROR_TAG):
        text = data[len(CHILD_ERROR_TAG):].decode(errors="replace")
        return RestoreError(child, shorten(text, ERROR_TEXT_MAX))
    proto = blobs.protocol()
    if len(data) == ctypes.sizeof(proto.RestorerError):
        record = proto.RestorerError.from_buffer_copy(data)
        step = next((name[len("RESTORER_STEP_"):].lower() for name in dir(proto)
                     if name.startswith("RESTORER_STEP_") and getattr(proto, name) == record.step), record.step)
        err = -record.err
        detail = describe_advice_failure(record.detail) if record.step == proto.RESTORER_STEP_ADVISE_VMAS \
            else f"detail {record.detail:#x}"
        return RestoreError(child, f"restorer step {step} failed: {errno.errorcode.get(err, err)} "
                                   f"({os.strerror(err)}), {detail}")
    return RestoreError(child, f"the restoring process {how} without saying why")


def wait_for_restorer_trap(child: int, errors) -> None:
    """Run the child until the restorer's int3; signals that arrive meanwhile go on to it."""
    while True:
        ptrace_stop = ptrace.wait(child)
        if ptrace_stop.exited or ptrace_stop.is_exit_stop:
            if ptrace_stop.is_exit_stop:
                ptrace.cont(child)
            raise failure(child, errors, ptrace_stop.describe())
        if ptrace_stop.is_signal_delivery and ptrace_stop.signal == signal.SIGTRAP:
            return
        ptrace.cont(child, ptrace_stop.signal if ptrace_stop.is_signal_delivery else 0)


def seize_waiting_threads(child: int, tids: list[int], traced: list[int]) -> None:
    """Bring the threads the restorer created, waiting at its barrier, under our ptrace (each added to traced).

    EXITKILL, as for the leader: a runtime that dies takes the half-restored process with it.
    """
    for tid in tids:
        try:
            ptrace.seize(tid, ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_EXITKILL)
        except PtraceError as exc:
            raise RestoreError(child, f"cannot seize the restored thread {tid}: {exc}") from exc
        traced.append(tid)
        ptrace.interrupt(tid)
        stop = ptrace.wait(tid)
        if not stop.is_event_stop:
            raise RestoreError(child, f"restored thread {tid} {stop.describe()} at the restorer's barrier")


def follow_to_own_context(child: int, errors, exits: bool = False) -> None:
    """From the trap (or the barrier), follow a thread's last restorer syscalls to the exit of its rt_sigreturn.

    exits: the thread ends in exit instead (a leader that had exited): followed to that syscall's entry.
    """
    entering = True
    while True:
        ptrace.syscall(child)
        stop = ptrace.wait(child)
        if stop.is_exit_stop:
            ptrace.cont(child)  # let it close its error pipe on the way out
        if stop.exited or stop.is_exit_stop:
            raise failure(child, errors, stop.describe())
        if not stop.is_syscall_stop:
            raise RestoreError(child, f"the restorer {stop.describe()} after its trap, before rt_sigreturn")
        if not entering:
            entering = True
            continue
        entering = False
        number = arch.signed(ptrace.get_regs(child).orig_rax)
        if exits and number == arch.NR_EXIT:
            return
        if number == arch.NR_RT_SIGRETURN:
            ptrace.syscall(child)
            stop = ptrace.wait(child)
            if not stop.is_syscall_stop:
                raise RestoreError(child, f"rt_sigreturn into the restored context failed: the task {stop.describe()}")
            return


def unmap_restorer(child: int, area: Area, remote: RemoteSyscall) -> None:
    """The restorer area goes; the task stays stopped until detach, in its own registers and mask."""
    settle(child)
    result = remote(arch.NR_MUNMAP, area.base, area.size)
    if result != 0:
        raise RestoreError(child, f"munmap of the restorer area {area.base:#x} failed: {os.strerror(-result)}")
