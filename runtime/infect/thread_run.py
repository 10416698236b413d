"""The parasite's per-thread part, run in a thread other than the leader, one thread at a time.

Why not a command: what only a thread can tell about itself (its
alternate signal stack, its clear_child_tid address) must be asked by that
thread, while the leader is busy serving the command channel. So the thread
is parked on its own return path (remote_syscall.ReturnPath: its saved
state in an rt_sigframe below its stack's red zone), its registers are
pointed at the blob's parasite_thread_start with the address of the area's
parasite_thread_call, and it runs there on the blob's second stack. It
fills the call's state and leaves through rt_sigreturn on its frame, which
the runtime cancels at the syscall's entry to put the thread's own state
back itself, as for the leader (an interrupted syscall keeps its restart).

A runtime that dies meanwhile lets the thread finish and return by itself;
the call's `active` word keeps the leader's parasite from unmapping the
area under it (the area stays, a leftover the next infection removes). A
fault in the thread parks it from the kernel's signal handling, so the
signal is never delivered, and it is put back like any other failure.
"""

import contextlib
import ctypes
import mmap
from types import ModuleType

from runtime import faults
from runtime.errors import InfectError
from runtime.infect.remote_syscall import Gadgets, ReturnPath

CHASE_LIMIT = 100  # syscalls parasite_thread_main may make before its rt_sigreturn


class ThreadRunner:
    """Runs parasite_thread_main in one thread of a process whose leader runs the parasite."""

    def __init__(self, pid: int, proto: ModuleType, area: mmap.mmap, call_offset: int, call_address: int,
                 entry: int, gadgets: Gadgets):
        self.pid = pid
        self.proto = proto
        self.area = area
        self.call_offset = call_offset
        self.call_address = call_address
        self.entry = entry
        self.gadgets = gadgets

    def dump_thread(self, tid: int):
        """The parasite_thread struct thread tid fills about itself; the thread is as before afterwards."""
        path = ReturnPath(self.pid, tid, gadgets=self.gadgets)
        with contextlib.ExitStack() as undo:
            path.enter()
            # Cleared only once the thread is its own again (callbacks run last-in first-out).
            undo.callback(self._set_call, 0, 0)
            undo.callback(lambda: None if path.exited else path.leave())
            self._set_call(1, path.sigreturn_sp)
            path.start_code(self.entry, self.call_address)
            faults.point("infect.thread")
            fault = path.chase_home(CHASE_LIMIT)
            if fault is not None:
                raise InfectError(tid, f"the parasite {fault.describe()} in thread {tid}")
            call = self.proto.ParasiteThreadCall.from_buffer_copy(self.area, self.call_offset)
            if call.err < 0:
                raise InfectError(tid, f"the parasite could not read thread {tid}'s own state: errno {-call.err}")
            if call.state.tid != tid:
                raise InfectError(tid, f"the parasite ran in thread {call.state.tid}, not {tid}")
            return call.state

    def _set_call(self, active: int, sigreturn_sp: int) -> None:
        call = self.proto.ParasiteThreadCall(active=active, sigreturn_sp=sigreturn_sp, err=0)
        self.area[self.call_offset:self.call_offset + ctypes.sizeof(call)] = bytes(call)

