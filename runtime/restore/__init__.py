"""Restore one process from an image directory: validate, fork with its PID, restorer, hand over.

Why this shape: everything that can be checked is checked before clone3
(the loader validates the image; the vDSO and layout are compared here),
because once the restorer has unmapped the child's memory there is no way
back. After clone3 the child is traced (PTRACE_O_EXITKILL: if the runtime
dies, so does the half-restored child) and any failure kills and reaps it,
so no half-restored process is ever left running.

The hand-over (restore/handover.py): the restorer creates the other
threads, each sets its own state and waits at a barrier, and the first
stops itself with int3 when the whole process is in place. There the
parent seizes the waiting threads, follows every thread's syscalls to the
exit of its rt_sigreturn, where it runs in its own registers, xstate and
mask, unmaps the restorer area with an injected munmap once no thread is
in it, sets what only an injected syscall or an outside call can, and
detaches them all.
"""

import contextlib
import logging
import os
import resource
import signal
import struct
from dataclasses import dataclass

from runtime import faults, progress
from runtime.errors import PtraceError, ReviveError, RestoreError
from runtime.files import table
from runtime.images import loader, names
from runtime.images.model import Process, RLimit
from runtime.infect.remote_syscall import RemoteSyscall
from runtime.kernel import ptrace
from runtime.kernel.clone import clone_with_pid
from runtime.kernel.procfs.holders import describe_holder
from runtime.kernel.procfs.io import bytes_read
from runtime.mm.vdso import VdsoMode, VdsoPlan, plan_restore
from runtime.restore import child as restore_child
from runtime.restore.handover import (ErrorChannel, follow_to_own_context, seize_waiting_threads, unmap_restorer,
                                      wait_for_restorer_trap)
from runtime.restore.restorer_args import Area, build_area, created_threads, plan_fds, target_ranges
from runtime.task import rseq, controls as task_controls

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Restored:
    pid: int
    area: Area


def restore(directory: str, detach: bool = False, shell_job: bool = False, vdso_mode: VdsoMode = VdsoMode.AUTO,
            leave_traced: bool = False) -> int:
    """Restore the image in directory; the restored process's exit status (0 at once with detach).

    leave_traced (for tests): return at once with the task still stopped
    under this process's ptrace, in its own registers, before it has run
    any of its own code (a process dumped group-stopped is not stopped
    again: that is the caller's to do).
    """
    # The image files stay open only until the child has inherited the pages file.
    with loader.load(directory) as checkpoint:
        image = checkpoint.root
        process = image.process
        table.check(process, names.process_file(process.pid))  # each file kind's own image checks
        check_restorable(process, shell_job, detach)
        faults.point("restore.validate")
        vdso = plan_vdso(process, image.vdso_image, vdso_mode)
        fds = plan_fds(process, _open_fds())
        area = build_area(process, image.xstates, fds, vdso)
        plan = restore_child.ChildPlan(process, image.pages.fileno(), fds, area, capped_rlimits(process))
        faults.point("restore.clone")
        restored = start(plan, leave_traced)
    log.info("pid %d restored from %s", restored.pid, directory)
    if detach or leave_traced:
        return 0
    return wait_relaying_signals(restored.pid)


def plan_vdso(process: Process, vdso_image: bytes | None, mode: VdsoMode) -> VdsoPlan | None:
    """Remap the running vDSO or proxy the dumped one (runtime/vdso.py decides)."""
    if process.vdso is None:
        return None
    plan = plan_restore(process, vdso_image, mode, [(r.start, r.end) for r in target_ranges(process)])
    log.info("pid %d: vdso %s: %s", process.pid, plan.decision.path.value, plan.decision.reason)
    return plan


def check_restorable(process: Process, shell_job: bool, detach: bool) -> None:
    if detach and process.controls.pdeath_signal:
        number = process.controls.pdeath_signal
        name = signal.Signals(number).name if number in set(signal.Signals) else f"signal {number}"
        raise RestoreError(process.pid, f"has a parent-death signal ({name}): this command becomes its parent, "
                                        "so -d would deliver it at once; restore without -d")
    for thread in created_threads(process):
        if os.path.exists(f"/proc/{thread.tid}"):
            raise RestoreError(process.pid, f"thread id {thread.tid} is in use: {describe_holder(thread.tid)}")
    inherited = table.inherited_fds(process)
    if inherited and not shell_job:
        raise RestoreError(process.pid, f"fds {inherited} are a shell job's stdio: restore with --shell-job")
    rseq.check_kernel_supports(process)


def capped_rlimits(process: Process) -> tuple[RLimit, ...]:
    """The dumped limits, each hard limit capped at ours: raising one needs CAP_SYS_RESOURCE."""
    capped = []
    for resource_id, limit in enumerate(process.rlimits):
        _, our_max = resource.getrlimit(resource_id)
        our_max = (1 << 64) - 1 if our_max == resource.RLIM_INFINITY else our_max
        hard = min(limit.max, our_max)
        if hard != limit.max:
            log.warning("pid %d: rlimit %d hard limit %d capped at %d", process.pid, resource_id, limit.max, hard)
        capped.append(RLimit(min(limit.cur, hard), hard))
    return tuple(capped)


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def start(plan: restore_child.ChildPlan, leave_traced: bool = False) -> Restored:
    """clone3 the child with the dumped PID and see every thread through the restorer into its own context."""
    pid = plan.process.pid
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = clone_with_pid(pid)
    except ReviveError:
        for fd in (go_r, go_w, err_r, err_w):
            os.close(fd)
        raise
    if child == 0:
        os.close(go_w)
        os.close(err_r)
        restore_child.run(plan, go_r, err_w)
    os.close(go_r)
    os.close(err_w)
    errors = ErrorChannel(err_r)
    others = [thread.tid for thread in created_threads(plan.process)]
    traced: list[int] = []  # the created threads under our ptrace: reaped before the leader on failure
    with _killed_on_failure(child, traced):
        try:
            # TRACEEXIT: a restorer failing after the other threads are traced stops on its way out,
            # where it is told apart from a thread that is merely slow (its exit is reported only
            # once theirs have been collected).
            ptrace.seize(child, ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_TRACEEXIT | ptrace.PTRACE_O_EXITKILL)
            os.write(go_w, struct.pack("<I", _glibc_rseq_length(child)))
        finally:
            os.close(go_w)
        with progress.watch("restore", sum(run.size for run in plan.process.page_runs),
                            lambda: bytes_read(child)):
            wait_for_restorer_trap(child, errors)
        faults.point("restore.handover")
        seize_waiting_threads(child, others, traced)
        # The leader releases the others from the barrier on its way: it goes first.
        if plan.process.leader_exited:
            # ... and exits again, as the dumped leader had: it goes on untraced from its exit's entry.
            follow_to_own_context(child, errors, exits=True)
            ptrace.detach(child)
            running = others
        else:
            follow_to_own_context(child, errors)
            # Its exit is no longer a restorer failure: a caller that keeps it traced must be able to kill it.
            ptrace.set_options(child, ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_EXITKILL)
            running = [child] + others
        for tid in others:
            follow_to_own_context(tid, errors)
        in_task = RemoteSyscall.for_thread(running[0], running[0])
        unmap_restorer(running[0], plan.area, in_task)
        controls = plan.process.controls
        task_controls.set_after_creds(child, controls, in_task)
        for thread in plan.process.threads:
            task_controls.set_thread_differences(child, thread.tid, thread.sched, thread.cpus, thread.io_priority)
            # After the last injected syscall: each returns to user mode outside any section, where
            # the kernel clears rseq_cs; nothing returns there again before the task's own code.
            rseq.write_back(thread.tid, thread.rseq)
        if not leave_traced:
            if controls.stopped:
                # Queued while every thread is in a ptrace stop: the first to run takes the group stop
                # on its way back to user mode after the detach, before any instruction of its own.
                os.kill(child, signal.SIGSTOP)
            for tid in running:
                ptrace.detach(tid)
            if controls.stopped:
                # Return once it is stopped (or already continued): as it was when dumped.
                os.waitpid(child, os.WUNTRACED | os.WCONTINUED)
    return Restored(child, plan.area)


@contextlib.contextmanager
def _killed_on_failure(child: int, traced: list[int]):
    try:
        yield
    except BaseException:
        _kill_and_reap(child, traced)
        raise


def _kill_and_reap(child: int, traced: list[int]) -> None:
    """SIGKILL the new process; its traced threads are waited for first, or the leader is never reported."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    for tid in traced + [child]:
        while True:
            try:
                _, status = os.waitpid(tid, ptrace.__WALL)
            except ChildProcessError:
                break
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            with contextlib.suppress(PtraceError):
                ptrace.cont(tid)  # an exit event stop (PTRACE_O_TRACEEXIT): go on to the end


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


def wait_relaying_signals(pid: int) -> int:
    """Wait for the restored process (our child); SIGINT/SIGTERM sent to us go to it."""
    relayed = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {sig: signal.signal(sig, lambda sig, _frame: os.kill(pid, sig)) for sig in relayed}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
