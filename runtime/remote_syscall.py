"""Running one syscall inside a stopped thread of the target, leaving it exactly as it was.

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
"""

from dataclasses import dataclass

from runtime import arch_x86_64 as arch
from runtime import ptrace
from runtime.errors import InfectError, PtraceError
from runtime.procfs.files import read_text


def vdso_range(pid: int) -> tuple[int, int]:
    for line in read_text(pid, "maps").splitlines():
        if line.endswith("[vdso]"):
            start, end = line.split()[0].split("-")
            return int(start, 16), int(end, 16)
    raise InfectError(pid, "has no [vdso] mapping to run injected syscalls from")


def find_syscall_insn(pid: int) -> int:
    """Address of a `syscall` instruction inside the process's [vdso]."""
    start, end = vdso_range(pid)
    code = ptrace.read_memory(pid, start, end - start)
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
        regs.orig_rax = arch.SIGSET_ALL  # -1: no syscall to restart
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
