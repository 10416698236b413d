"""Seizing a whole process: every thread stopped under ptrace, and released again.

Why PTRACE_SEIZE + PTRACE_INTERRUPT and not ATTACH: ATTACH sends a SIGSTOP
the process would later see (and a shell would report), SEIZE stops nothing
and INTERRUPT stops a task without any signal. Threads are found in
/proc/PID/task, which is re-read until no thread appears that is not yet
stopped: a thread not yet stopped may clone another meanwhile.

A process that was group-stopped (SIGSTOP, ^Z) is seized too; it reports
its group stop instead of an interrupt, and the kernel puts it back into
that stop when it is detached, so it stays stopped as it was.

A process whose thread-group leader has exited (pthread_exit in main while
other threads run) keeps its PID with the leader as a zombie, which ptrace
cannot seize and whose /proc files show no memory or files: the other
threads are seized, and one of them (`worker`) stands in for the leader
wherever a live task is needed.
"""

import errno
import os
import signal
from dataclasses import dataclass, field

from runtime.kernel import ptrace
from runtime.errors import (AccessDenied, AlreadyTraced, KernelThread, NoSuchProcess, OwnProcess,
                            ProcessError, PtraceError, ZombieProcess)
from runtime.kernel.procfs.files import proc_path, read_text, translated
from runtime.kernel.procfs.status import Status, read_status

PF_KTHREAD = 0x00200000


@dataclass
class Thread:
    tid: int
    group_stopped: bool  # it reported a group stop when seized (the process was stopped)


@dataclass
class Seized:
    """A process whose every thread is stopped under our ptrace; a context manager that releases it."""

    pid: int
    threads: dict[int, Thread] = field(default_factory=dict)  # the leader first (unless it exited)
    leader_exited: bool = False  # the leader is a zombie and not among threads

    @property
    def worker(self) -> int:
        """The live task that stands for the process: the leader, or the first thread once it exited."""
        return next(iter(self.threads))

    @property
    def leader(self) -> Thread:
        """The leader's Thread, or the worker's once the leader exited (its group stop is the process's)."""
        return self.threads[self.worker]

    @property
    def tids(self) -> list[int]:
        return list(self.threads)

    def release(self, leave_stopped: bool = False) -> None:
        """Detach every thread; with leave_stopped the process ends up group-stopped.

        A SIGSTOP queued while every thread is still in a ptrace stop is
        taken by the first thread that runs after the detach, and stops the
        whole group, so no thread runs a single instruction of its own.
        """
        if leave_stopped and self.threads:
            os.kill(self.pid, signal.SIGSTOP)
        failures = []
        for tid in list(self.threads):
            try:
                _detach_stopped(tid)
            except PtraceError as exc:
                failures.append(exc)
            del self.threads[tid]
        if failures:
            raise failures[0]

    def __enter__(self) -> "Seized":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _detach_stopped(tid: int) -> None:
    """Detach a task that should be in a ptrace stop; bring it to one first if it is not."""
    try:
        ptrace.detach(tid)
        return
    except PtraceError as exc:
        if exc.errno != errno.ESRCH:
            raise
    # ESRCH: running (or gone). Stop it, then detach; a task that has exited needs nothing.
    try:
        ptrace.interrupt(tid)
    except PtraceError as exc:
        if exc.errno == errno.ESRCH:
            return
        raise
    stop = wait_for_stop(tid)
    if stop is not None:
        ptrace.detach(tid)


def wait_for_stop(tid: int) -> ptrace.Stop | None:
    """Wait until the task reports a ptrace event stop (interrupt or group stop).

    A signal that arrives first is delivered as it would have been without
    us (its delivery stop is continued with the signal). None if the task exited.
    """
    while True:
        stop = ptrace.wait(tid)
        if stop.exited:
            return None
        if stop.is_event_stop:
            return stop
        ptrace.cont(tid, stop.signal if stop.is_signal_delivery else 0)


def check_seizable(pid: int) -> Status:
    """Refuse, naming the PID, what cannot or must not be seized; the status it read."""
    if pid <= 0:
        raise NoSuchProcess(pid)
    if pid == os.getpid():
        raise OwnProcess(pid)
    status = read_status(pid)
    if status.tgid == os.getpid():
        raise OwnProcess(pid, f"is a thread of the runtime's own process {os.getpid()}")
    if status.tgid != pid:
        raise ProcessError(pid, f"is a thread of process {status.tgid}, not a process")
    if _stat_flags(pid) & PF_KTHREAD:
        raise KernelThread(pid)
    if status.state in ("Z", "X") and status.threads <= 1:
        raise ZombieProcess(pid)
    if status.tracer_pid:
        raise AlreadyTraced(pid, status.tracer_pid)
    return status


def _stat_flags(pid: int) -> int:
    # Fields after the parenthesised comm: state ppid pgrp session tty tpgid flags ...
    return int(read_text(pid, "stat").rsplit(")", 1)[1].split()[6])


def list_tids(pid: int) -> list[int]:
    with translated(pid, "task"):
        return sorted(int(t) for t in os.listdir(proc_path(pid, "task")))


def _seize_thread(pid: int, tid: int) -> Thread | None:
    """Seize and stop one thread; None if it exited meanwhile."""
    try:
        ptrace.seize(tid)
    except PtraceError as exc:
        if exc.errno == errno.ESRCH:
            return None
        if exc.errno == errno.EPERM and _exited(pid, tid):
            return None  # ptrace refuses a thread that has exited (its exit_state set) with EPERM too
        if exc.errno == errno.EPERM:
            tracer = read_status(pid).tracer_pid
            if tracer and tracer != os.getpid():
                raise AlreadyTraced(pid, tracer) from exc
            raise AccessDenied(pid, f"ptrace SEIZE of thread {tid} not permitted") from exc
        raise
    ptrace.interrupt(tid)
    stop = wait_for_stop(tid)
    if stop is None:
        return None
    return Thread(tid, stop.is_group_stop)


def _exited(pid: int, tid: int) -> bool:
    """The thread is gone, or a zombie or dead thread whose exit ptrace sees."""
    try:
        state = read_text(pid, f"task/{tid}/stat").rsplit(")", 1)[1].split()[0]
    except NoSuchProcess:
        return True
    return state in ("Z", "X", "x")


def seize(pid: int) -> Seized:
    """Stop every thread of process pid under ptrace; release() (or `with`) lets them go."""
    # A zombie leader that check_seizable let through has threads running on (pthread_exit in main).
    seized = Seized(pid, leader_exited=check_seizable(pid).state in ("Z", "X"))
    exited: set[int] = set()  # threads gone, or exited and still listed (a zombie's) until their process is reaped
    try:
        while True:
            new = [tid for tid in list_tids(pid) if tid not in seized.threads and tid not in exited
                   and not (tid == pid and seized.leader_exited)]
            if not new:
                break
            for tid in new:
                thread = _seize_thread(pid, tid)
                if thread is None:
                    exited.add(tid)
                else:
                    seized.threads[tid] = thread
        if not seized.threads or (pid not in seized.threads and not seized.leader_exited):
            check_seizable(pid)
            raise NoSuchProcess(pid, "the thread-group leader exited while being seized")
    except BaseException:
        seized.release()
        raise
    if not seized.leader_exited:
        seized.threads = {pid: seized.threads.pop(pid), **seized.threads}
    return seized
