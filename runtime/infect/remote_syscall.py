"""Running syscalls inside a stopped thread of the target, leaving it exactly as it was.

Why through the vDSO: every process has a [vdso] mapping with a `syscall`
instruction in it (the time functions' fallback path), so pointing rip at
it runs a syscall without writing a byte of the target's own code.

Why the detour at the end: the task is followed to its syscall-exit stop
and registers changed there go straight to user mode; only a stop inside
the kernel's signal handling (an interrupt stop) lets the kernel apply its
syscall-restart rules to the registers put back. So after the injected
syscall the task is brought to an interrupt stop (PTRACE_INTERRUPT, then
continue) and its saved registers and signal mask are restored there: a
task that was sleeping in nanosleep or blocked in read restarts it exactly
as if we had never been there (its restart_block is untouched). orig_rax is
-1 in the injected registers so the kernel does not treat the task's own
interrupted syscall as something to restart before ours runs.

RemoteSyscall leaves the task at the vDSO's syscall instruction with
injected registers while it works: a tracer that dies then lets the task
run on from there with garbage registers. `ReturnPath` is the kill-safe way
(the infection uses it): every injected syscall returns into an
rt_sigreturn in the task's own code on a frame of the task's saved state
(docs/infection.md, "When the runtime dies").
"""

import errno
import mmap
import signal
from dataclasses import dataclass

from runtime import faults
from runtime.arch import x86_64 as arch
from runtime.errors import InfectError, PtraceError
from runtime.kernel import ptrace
from runtime.kernel.procfs import mem
from runtime.kernel.procfs.maps import VSYSCALL, read_layout


def vdso_range(pid: int) -> tuple[int, int]:
    for m in read_layout(pid):
        if m.name == "[vdso]":
            return m.start, m.end
    raise InfectError(pid, "has no [vdso] mapping to run injected syscalls from")


def find_syscall_insn(pid: int) -> int:
    """Address of a `syscall` instruction inside the process's [vdso]."""
    start, end = vdso_range(pid)
    code = mem.read_memory(pid, start, end - start)
    offset = code.find(arch.SYSCALL_INSN)
    if offset < 0:
        raise InfectError(pid, f"no syscall instruction in [vdso] at {start:#x}")
    return start + offset


@dataclass
class RemoteSyscall:
    """Runs syscalls in one thread (stopped in an interrupt or group stop) of a seized process."""

    tid: int
    syscall_ip: int

    @classmethod
    def for_thread(cls, pid: int, tid: int) -> "RemoteSyscall":
        return cls(tid, find_syscall_insn(pid))

    def __call__(self, nr: int, *args: int) -> int:
        """Run syscall nr with args; the raw result (a negative errno on failure)."""
        saved = ptrace.get_regs(self.tid)
        saved_mask = ptrace.get_sigmask(self.tid)
        # No signal may interrupt the injected syscall or stop the task in between.
        ptrace.set_sigmask(self.tid, arch.SIGSET_ALL)
        regs = arch.copy_regs(saved)
        arch.set_syscall_args(regs, nr, args)
        regs.rip = self.syscall_ip
        regs.orig_rax = arch.NO_SYSCALL  # -1: no syscall to restart
        try:
            ptrace.set_regs(self.tid, regs)
            self._step_to_syscall_stop(nr, "entry")
            self._step_to_syscall_stop(nr, "exit")
            result = arch.syscall_result(ptrace.get_regs(self.tid))
            settle(self.tid)
        except Exception as exc:
            exc.add_note(_put_back(self.tid, saved, saved_mask))
            raise
        ptrace.set_regs(self.tid, saved)
        ptrace.set_sigmask(self.tid, saved_mask)
        return result

    def _step_to_syscall_stop(self, nr: int, which: str) -> None:
        ptrace.syscall(self.tid)
        stop = ptrace.wait(self.tid)
        # A task seized while group-stopped has one more trap queued (the
        # seize's re-trap and our interrupt); it stops there first, before user mode.
        while stop.is_event_stop and which == "entry":
            ptrace.syscall(self.tid)
            stop = ptrace.wait(self.tid)
        if not stop.is_syscall_stop:
            raise InfectError(self.tid, f"injected syscall {nr}: expected its {which} stop, task {stop.describe()}")


def settle(tid: int) -> None:
    """Bring a task from a syscall stop to an interrupt stop, where restored registers get restart handling.

    PTRACE_INTERRUPT on a task in a ptrace stop only queues the trap; the
    continue lets it leave the syscall and take the trap before user mode.
    """
    ptrace.interrupt(tid)
    ptrace.cont(tid)
    stop = ptrace.wait(tid)
    if not stop.is_event_stop:
        raise InfectError(tid, f"expected an interrupt stop after an injected syscall, task {stop.describe()}")


def _put_back(tid: int, regs: arch.UserRegs, mask: int) -> str:
    """After a failed injection, restore what can be restored; says what happened, for the error."""
    try:
        settle(tid)
        ptrace.set_regs(tid, regs)
        ptrace.set_sigmask(tid, mask)
    except (PtraceError, InfectError) as exc:
        return f"registers of {tid} could not be put back: {exc}"
    return f"registers of {tid} put back"


# -- the kill-safe way: every injected syscall returns into the task's own rt_sigreturn ----------

@dataclass(frozen=True)
class SavedContext:
    """A thread's own state before anything was changed: what leaving puts back."""

    regs: arch.UserRegs
    xstate: bytes
    sigmask: int


@dataclass(frozen=True)
class Gadgets:
    """Instruction sequences in the task's own executable mappings, none of them written by us."""

    sigreturn: int  # `mov $15, %eax; syscall` (libc's __restore_rt)
    sigreturn_len: int
    syscall_ret: int  # `syscall; ret`, or 0 if the process has none


def find_gadgets(pid: int) -> Gadgets:
    """The process's rt_sigreturn sequence (required) and a `syscall; ret` (optional).

    Smaller mappings are searched first: the C library, where both live,
    comes before a large program or interpreter library.
    """
    regions = [(m.end - m.start, m.start) for m in read_layout(pid)
               if m.prot & mmap.PROT_EXEC and m.name != VSYSCALL]
    sigreturn = sigreturn_len = syscall_ret = 0
    for size, start in sorted(regions):
        code = mem.read_memory(pid, start, size)
        for sequence in arch.SIGRETURN_SEQUENCES:
            if not sigreturn and (i := code.find(sequence)) >= 0:
                sigreturn, sigreturn_len = start + i, len(sequence)
        if not syscall_ret and (i := code.find(arch.SYSCALL_RET_INSNS)) >= 0:
            syscall_ret = start + i
        if sigreturn and syscall_ret:
            break
    if not sigreturn:
        raise InfectError(pid, "no rt_sigreturn sequence (a libc signal restorer) in its executable mappings: "
                               "injected code could not return it to its own context safely")
    return Gadgets(sigreturn, sigreturn_len, syscall_ret)


class ReturnPath:
    """A stopped thread parked on its way back to its own context; injected syscalls run from there.

    Parked means: rip at the task's own `mov $15, %eax; syscall`, rsp at an
    rt_sigframe of its saved registers, xstate and signal mask, written below
    the red zone of its own stack (where the kernel would put a signal
    frame, so nothing the program owns is overwritten), with the frame's
    pretcode pointing at that same sequence. Whatever ptrace stop the
    tracer dies in, the kernel detaches the task and it runs the
    rt_sigreturn: it is back in its own state (an interrupted nanosleep or
    futex wait with a timeout returns -EINTR, rt_sigreturn having reset its
    restart_block). An injected syscall is the hijacked entry stop of that
    rt_sigreturn (the number and arguments replaced, rip set back to the
    sequence), so it returns to the same place. While the tracer lives, no
    rt_sigreturn ever runs: leave() puts the saved state back at an
    interrupt stop, where the kernel restarts the task's own syscall.
    """

    def __init__(self, pid: int, tid: int, strings: bytes = b"", gadgets: Gadgets | None = None):
        self.pid = pid
        self.tid = tid
        self.strings = strings  # NUL-terminated data the injected syscalls point at (strings_addr)
        self.saved: SavedContext | None = None
        self.gadgets = gadgets  # found on enter() unless another thread's path already found them
        self.sigreturn_sp = 0
        self.strings_addr = 0
        self.scratch = 0  # lowest stack address written
        self.scratch_before = b""  # what was there: put back when the task never ran on its own
        self.stop_held = False  # a SIGSTOP arrived meanwhile; the caller sends it again afterwards
        self.exited = False  # the target exited under an injected syscall

    def enter(self) -> None:
        """Save the thread's state, write the frame, park it there and block every signal."""
        regs = ptrace.get_regs(self.tid)
        self.saved = SavedContext(regs, ptrace.get_xstate(self.tid), ptrace.get_sigmask(self.tid))
        if self.gadgets is None:
            self.gadgets = find_gadgets(self.pid)
        top = regs.rsp - arch.RED_ZONE
        frame_addr = (top - arch.rt_sigframe_size(len(self.saved.xstate))) & ~(arch.XSTATE_ALIGN - 1)
        self.strings_addr = (frame_addr - len(self.strings)) & ~15
        self.scratch = self.strings_addr
        frame, self.sigreturn_sp = arch.build_rt_sigframe(arch.resume_registers(regs), self.saved.xstate,
                                                          self.saved.sigmask, frame_addr)
        # pretcode: where a handler's `ret` goes, as libc's restorer is for a real signal frame.
        frame = self.gadgets.sigreturn.to_bytes(8, "little") + frame[8:]
        try:
            self.scratch_before = mem.read_memory(self.pid, self.scratch, top - self.scratch)
            scratch = self.strings.ljust(frame_addr - self.strings_addr, b"\0") + frame
            mem.write_memory(self.pid, self.scratch, scratch.ljust(top - self.scratch, b"\0"))
        except PtraceError as exc:
            raise InfectError(self.tid, f"no room for a signal frame below its stack pointer {regs.rsp:#x}: "
                                        f"{exc}") from exc
        self.park()
        faults.point("infect.parked")
        ptrace.set_sigmask(self.tid, arch.SIGSET_ALL)
        faults.point("infect.blocked")

    def park(self) -> None:
        """Point the thread (in any ptrace stop) at the rt_sigreturn on the saved frame."""
        self._set_from_saved(rip=self.gadgets.sigreturn, rsp=self.sigreturn_sp)

    def start_code(self, entry: int, arg: int) -> None:
        """Point the parked thread at blob code, entry(arg) (arg in rdi), which must leave through the frame."""
        self._set_from_saved(rip=entry, rdi=arg, rax=0)

    def _set_from_saved(self, **changes: int) -> None:
        """The saved registers with changes, no syscall of the task's to restart on the way (orig_rax -1)."""
        regs = arch.copy_regs(self.saved.regs)
        for name, value in changes.items():
            setattr(regs, name, value)
        regs.orig_rax = arch.NO_SYSCALL
        regs.eflags &= ~(arch.EFLAGS_TF | arch.EFLAGS_DF)
        ptrace.set_regs(self.tid, regs)

    def is_parked(self, regs: arch.UserRegs) -> bool:
        """Whether regs are on the way back: the exit path's `syscall; ret`, or the rt_sigreturn sequence."""
        at_sigreturn = self.gadgets.sigreturn <= regs.rip <= self.gadgets.sigreturn + self.gadgets.sigreturn_len
        ret = self.gadgets.syscall_ret
        at_ret = ret != 0 and ret <= regs.rip <= ret + len(arch.SYSCALL_RET_INSNS)
        return regs.rsp in (self.sigreturn_sp, self.sigreturn_sp - 8) and (at_sigreturn or at_ret)

    def __call__(self, nr: int, *args: int) -> int:
        """Run syscall nr with args in the parked thread; the raw result. It stays parked."""
        self.run_to_syscall_stop()
        regs = ptrace.get_regs(self.tid)
        if not self.at_final_sigreturn(regs):
            raise InfectError(self.tid, f"injected syscall {nr}: expected the entry of the parked rt_sigreturn, "
                                        f"task at rip {regs.rip:#x} in syscall {arch.signed(regs.orig_rax)}")
        arch.set_syscall_args(regs, nr, args)
        regs.orig_rax = nr
        regs.rip = self.gadgets.sigreturn  # it returns to the rt_sigreturn, not after it
        ptrace.set_regs(self.tid, regs)
        faults.point("infect.syscall")
        self.run_to_syscall_stop()
        result = arch.syscall_result(ptrace.get_regs(self.tid))
        faults.point("infect.syscall_exit")
        return result

    def at_final_sigreturn(self, regs: arch.UserRegs) -> bool:
        """Whether the thread is at the entry stop of an rt_sigreturn on the saved frame."""
        return (arch.signed(regs.orig_rax) == arch.NR_RT_SIGRETURN and arch.signed(regs.rax) == -errno.ENOSYS
                and regs.rsp == self.sigreturn_sp)

    def cancel_sigreturn(self) -> None:
        """At the entry stop of the parked rt_sigreturn: skip it (the thread stays parked).

        rt_sigreturn would reset the restart_block of the task's own
        interrupted syscall; leave() restores the state without it.
        """
        regs = ptrace.get_regs(self.tid)
        regs.orig_rax = arch.NO_SYSCALL  # the kernel runs no syscall for -1
        regs.rip = self.gadgets.sigreturn
        ptrace.set_regs(self.tid, regs)
        self.run_to_syscall_stop()

    def chase_home(self, limit: int) -> ptrace.Stop | None:
        """Follow the thread through injected code to its final rt_sigreturn on the frame, and cancel that.

        The thread is parked again either way. None when it got there; the
        stop when it faulted on the way instead: it is parked from inside the
        kernel's signal handling, so the fault's signal is never delivered.
        """
        for _ in range(limit):
            ptrace.syscall(self.tid)
            stop = ptrace.wait(self.tid)
            if stop.exited:
                self.exited = True
                raise InfectError(self.tid, f"the target {stop.describe()} while injected code ran in it")
            if stop.is_signal_delivery and stop.signal == signal.SIGSTOP:
                self.stop_held = True
                continue
            if stop.is_event_stop:
                continue
            if not stop.is_syscall_stop:
                self.park()
                return stop
            if self.at_final_sigreturn(ptrace.get_regs(self.tid)):
                self.cancel_sigreturn()
                return None
        raise InfectError(self.tid, f"injected code made {limit} syscalls without reaching its rt_sigreturn")

    def run_to_syscall_stop(self) -> ptrace.Stop:
        """Continue to the next syscall stop; a SIGSTOP meanwhile is held back, a queued trap passed."""
        while True:
            ptrace.syscall(self.tid)
            stop = ptrace.wait(self.tid)
            if stop.is_syscall_stop:
                return stop
            if stop.exited:
                self.exited = True
                raise InfectError(self.tid, f"the target {stop.describe()} during an injected syscall")
            if stop.is_signal_delivery and stop.signal == signal.SIGSTOP:
                self.stop_held = True
            elif not stop.is_event_stop:
                # A task seized while group-stopped has one more trap queued; anything else is a fault.
                raise InfectError(self.tid, f"expected a syscall stop on the return path, task {stop.describe()}")

    def leave(self) -> None:
        """Put the saved state back (the thread is parked); the registers last.

        Until the registers are the task's own again, a dead tracer still
        leaves it on the return path; the frame's stack bytes are put back
        only after that, since the frame is no longer needed then.
        """
        settle(self.tid)
        ptrace.set_xstate(self.tid, self.saved.xstate)
        ptrace.set_sigmask(self.tid, self.saved.sigmask)
        faults.point("infect.restoring")
        ptrace.set_regs(self.tid, self.saved.regs)
        faults.point("infect.restored")
        mem.write_memory(self.pid, self.scratch, self.scratch_before)
