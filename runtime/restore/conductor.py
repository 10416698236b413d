"""The runtime's side of a tree restore: fork the first member, follow every one to its trap, let all go together.

Why one conductor: the members fork each other (restore/spawn.py), but
only the runtime sees the whole tree. It seizes each member as soon as its
parent reports it exists (PTRACE_O_EXITKILL: if the runtime dies, the
half-restored tree dies with it), opens a pidfd on it (readable once it
has exited: a member that dies while the others wait is seen at once),
and says go when every member exists, and again to the stand-ins once
every member has joined its group. It then waits for each member's
restorer trap, lets the zombies die, hands each process over
(restore/handover.py) and detaches them all only then: no process of the
tree runs its own code before every process is in place.

Any failure kills every member there is and reaps them all: the traced
ones as their tracer, the others as the child subreaper the runtime makes
itself for that (their parents die too, and pid 1 may not reap), so no
process of a failed restore is left behind, not even a zombie holding a PID.
"""

import contextlib
import errno
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field

from runtime import faults, progress
from runtime.errors import PtraceError, ReviveError, RestoreError
from runtime.infect.remote_syscall import RemoteSyscall
from runtime.kernel import ptrace
from runtime.kernel.clone import clone_with_pid, is_subreaper, set_subreaper
from runtime.kernel.procfs.io import bytes_read
from runtime.kernel.procfs.stat import read_stat
from runtime.restore import spawn
from runtime.restore.handover import (ErrorChannel, failure, follow_to_own_context, seize_waiting_threads,
                                      unmap_restorer, wait_for_restorer_trap)
from runtime.restore.restorer_args import created_threads
from runtime.task import rseq, controls as task_controls

log = logging.getLogger(__name__)

SEIZE_OPTIONS = ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_EXITKILL
WCOREFLAG = 0x80  # the core-dump bit of a wait status
# How long the reaping of a failed restore waits for a killed member to become ours to reap.
REAP_SECONDS = 5.0
# How long a restore waits for a child that was dumped stopped to be seen stopped again.
STOP_SECONDS = 2.0


@dataclass
class Pipes:
    """The runtime's pipes to the members: one report pipe, and a go and an error pipe each."""

    report: tuple[int, int]
    go: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (read, write)
    err: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def open(cls, pids: list[int]) -> "Pipes":
        pipes = cls(os.pipe())
        try:
            for pid in pids:
                pipes.go[pid] = os.pipe()
                pipes.err[pid] = os.pipe()
        except BaseException:
            pipes.close()
            raise
        return pipes

    def close(self) -> None:
        for fd in (*self.report, *(fd for ends in self.go.values() for fd in ends),
                   *(fd for ends in self.err.values() for fd in ends)):
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def runtime_ends(self) -> tuple[int, ...]:
        return (self.report[0], *(w for _, w in self.go.values()), *(r for r, _ in self.err.values()))

    @property
    def member_ends(self) -> tuple[int, ...]:
        return (self.report[1], *(r for r, _ in self.go.values()), *(w for _, w in self.err.values()))


class Conductor:
    """One tree restore from the runtime's side; see the module docstring."""

    def __init__(self, tree: spawn.TreePlan, pipes: Pipes):
        self.tree = tree
        self.pipes = pipes
        self.errors: dict[int, ErrorChannel] = {}
        self.pidfds: dict[int, int] = {}  # members being watched for an early death
        self.traced: dict[int, list[int]] = {}  # pid -> the created threads under our ptrace
        self.running: dict[int, list[int]] = {}  # pid -> its tasks in their own context, stopped under our ptrace

    def restore(self, leave_traced: bool) -> int:
        """Fork the tree and see it whole into its own context; the root's pid."""
        first = self.tree.first.node.pid
        child = clone_with_pid(first)
        if child == 0:
            spawn.run(self.tree, first)
        for fd in self.pipes.member_ends:
            os.close(fd)
        # The error pipes' read ends are the channels' from now on, the rest stay the pipes'.
        self.errors = {pid: ErrorChannel(r) for pid, (r, _) in self.pipes.err.items()}
        self.pipes.err.clear()
        members = self.tree.members
        try:
            self._watch(first)
            ptrace.seize(first, SEIZE_OPTIONS)
            self._go(first, spawn.ROOT_GO.pack(_glibc_rseq_length(first)))
            self._await(spawn.CREATED, set(members), self._created)
            for pid in members:
                self._go(pid, spawn.GO)
            self._await(spawn.JOINED, {pid for pid, member in members.items() if not member.stand_in})
            for pid in [pid for pid, member in members.items() if member.stand_in]:
                self._go(pid, spawn.GO)  # its creator reaps it
                os.close(self.pidfds.pop(pid))
            if members[first].stand_in:
                os.waitpid(first, 0)  # ours (and traced by us): the root's session's stand-in
            live = [pid for pid, member in members.items() if member.plan is not None]
            total = sum(run.size for pid in live for run in members[pid].plan.process.page_runs)
            with progress.watch("restore", total, lambda: sum(_bytes_read(pid) for pid in live)):
                for pid in live:
                    wait_for_restorer_trap(pid, self.errors[pid])
                    # From here its exit is a restorer failure the tracer must tell from a slow thread.
                    ptrace.set_options(pid, SEIZE_OPTIONS | ptrace.PTRACE_O_TRACEEXIT)
            faults.point("restore.handover")
            for pid in [pid for pid, member in members.items() if member.zombie]:
                self._let_die(pid)
            for pid in live:
                self._hand_over(pid)
            if not leave_traced:
                self._detach_all()
        except BaseException:
            self.kill_all()
            raise
        finally:
            for fd in self.pidfds.values():
                os.close(fd)
            self.pidfds.clear()
        return self.tree.root

    # -- the members' reports, and their deaths --------------------------------------------------------------

    def _watch(self, pid: int) -> None:
        try:
            self.pidfds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            raise failure(pid, self.errors[pid], "was gone before it reported") from None

    def _go(self, pid: int, message: bytes) -> None:
        _, write_end = self.pipes.go[pid]
        os.write(write_end, message)

    def _await(self, stage: int, expected: set[int], on_report=None) -> None:
        """Read reports until every expected member has sent stage; a member that dies meanwhile fails the restore."""
        report = self.pipes.report[0]
        pending = b""
        while expected:
            ready, _, _ = select.select([report, *self.pidfds.values()], [], [])
            for fd in ready:
                if fd != report:
                    pid = next(p for p, pidfd in self.pidfds.items() if pidfd == fd)
                    raise failure(pid, self.errors[pid], "exited")
                data = os.read(report, 1 << 12)
                if not data:
                    # The last member's exit ends the pipe a moment before its pidfd says so: name the one that failed.
                    exited, _, _ = select.select(list(self.pidfds.values()), [], [], 1.0)
                    for pid, pidfd in self.pidfds.items():
                        if pidfd in exited:
                            raise failure(pid, self.errors[pid], "exited")
                    raise RestoreError(self.tree.root, "every process of the tree went away")
                pending += data
                while len(pending) >= spawn.REPORT.size:
                    pid, got = spawn.REPORT.unpack_from(pending)
                    pending = pending[spawn.REPORT.size:]
                    if got != stage or pid not in expected:
                        raise RestoreError(pid, f"reported stage {got} out of turn (expected {stage})")
                    expected.discard(pid)
                    if on_report is not None:
                        on_report(pid)

    def _created(self, pid: int) -> None:
        """pid has forked its children: watch them, and seize those that become processes."""
        for child in self.tree.members[pid].children:
            self._watch(child)
            if self.tree.members[child].plan is not None:
                try:
                    ptrace.seize(child, SEIZE_OPTIONS)
                except PtraceError as exc:
                    raise RestoreError(child, f"cannot seize the restoring process: {exc}") from exc

    def _let_die(self, pid: int) -> None:
        """A zombie's last go: it exits with its dumped status, and stays its parent's to reap."""
        self._go(pid, spawn.GO)
        select.select([self.pidfds[pid]], [], [])
        os.close(self.pidfds.pop(pid))
        status = read_stat(pid).exit_code
        wanted = self.tree.members[pid].node.zombie_status & ~WCOREFLAG  # a restore dumps no core (spawn.die)
        if status != wanted:
            raise RestoreError(pid, f"the zombie ended with wait status {status:#x}, not {wanted:#x}")

    # -- the hand-over --------------------------------------------------------------------------------------

    def _hand_over(self, pid: int) -> None:
        """One process from its restorer's trap into its own context, every thread stopped under our ptrace."""
        process = self.tree.members[pid].plan.process
        area = self.tree.members[pid].plan.area
        errors = self.errors[pid]
        others = [thread.tid for thread in created_threads(process)]
        self.traced[pid] = []
        seize_waiting_threads(pid, others, self.traced[pid])
        # The leader releases the others from the barrier on its way: it goes first.
        if process.leader_exited:
            # ... and exits again, as the dumped leader had: it goes on untraced from its exit's entry.
            follow_to_own_context(pid, errors, exits=True)
            ptrace.detach(pid)
            running = others
        else:
            follow_to_own_context(pid, errors)
            # Its exit is no longer a restorer failure: a caller that keeps it traced must be able to kill it.
            ptrace.set_options(pid, SEIZE_OPTIONS)
            running = [pid] + others
        for tid in others:
            follow_to_own_context(tid, errors)
        in_task = RemoteSyscall.for_thread(running[0], running[0])
        unmap_restorer(running[0], area, in_task)
        task_controls.set_after_creds(pid, process.controls, in_task)
        for thread in process.threads:
            task_controls.set_thread_differences(pid, thread.tid, thread.sched, thread.cpus, thread.io_priority)
            # After the last injected syscall: each returns to user mode outside any section, where
            # the kernel clears rseq_cs; nothing returns there again before the task's own code.
            rseq.write_back(thread.tid, thread.rseq)
        self.running[pid] = running

    def _detach_all(self) -> None:
        """Every process on its way, children first; a process dumped stopped stops again before it runs."""
        for pid in reversed(list(self.running)):
            stopped = self.tree.members[pid].plan.process.controls.stopped
            if stopped:
                # Queued while every thread is in a ptrace stop: the first to run takes the group stop
                # on its way back to user mode after the detach, before any instruction of its own.
                os.kill(pid, signal.SIGSTOP)
            for tid in self.running[pid]:
                ptrace.detach(tid)
        # Return once every process dumped stopped is stopped again (or already continued): as it was when dumped.
        for pid in self.running:
            if not self.tree.members[pid].plan.process.controls.stopped:
                continue
            if pid == self.tree.root:
                os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)
            else:
                _wait_stopped(pid)  # another member's child: its stop can only be seen in /proc

    # -- failure ----------------------------------------------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every member and reap them all, each as its tracer or as the subreaper of its orphans."""
        was_subreaper = is_subreaper()
        set_subreaper(True)
        try:
            pids = list(self.tree.members)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _reap([tid for pid in pids for tid in self.traced.get(pid, [])] + pids)
        finally:
            set_subreaper(was_subreaper)


def _wait_stopped(pid: int) -> None:
    """Until pid is in its group stop (state T), gone, or STOP_SECONDS have passed (a SIGCONT may come first)."""
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            if read_stat(pid).state == "T":
                return
        except ReviveError:
            return
        time.sleep(0.001)


def _reap(tids: list[int]) -> None:
    """Collect killed tasks until none is left, in whatever order the kernel lets go of them.

    A tracer's wait hands a member that is not its child on to the member's
    parent; once that parent is dead too, the zombie is the subreaper's. A
    parent stopped at its exit (PTRACE_O_TRACEEXIT) hands its children on
    only when continued, so no task is waited for alone.
    """
    deadline = time.monotonic() + REAP_SECONDS
    left = list(tids)
    while left:
        for tid in list(left):
            try:
                got, status = os.waitpid(tid, os.WNOHANG | ptrace.__WALL)
            except ChildProcessError:
                got = 0  # not ours (yet): its parent is still exiting
            if got and not (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                with contextlib.suppress(PtraceError):
                    ptrace.cont(tid)  # an exit event stop: go on to the end
            if not os.path.exists(f"/proc/{tid}"):
                left.remove(tid)
        if left and time.monotonic() > deadline:
            log.warning("tasks %s of the failed restore are not ours to reap: left to their parents", left)
            return
        if left:
            time.sleep(0.001)


def _bytes_read(pid: int) -> int:
    try:
        return bytes_read(pid)
    except (ReviveError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOENT, errno.ESRCH):
            raise
        return 0


def _glibc_rseq_length(child: int) -> int:
    """The length our glibc registered its rseq area with: unregistering needs the same value.

    The child inherited our registration; it is read from the child (ptrace
    cannot read our own) while it waits for the go message.
    """
    ptrace.interrupt(child)
    stop = ptrace.wait(child)
    if not stop.is_event_stop:
        raise RestoreError(child, f"expected an interrupt stop before the restore, the child {stop.describe()}")
    conf = ptrace.get_rseq_configuration(child)
    ptrace.cont(child)
    return conf.size if conf.address else 0
