"""A task's controls (prctl options, scheduling, affinity, I/O priority, OOM and core-dump settings, stop state).

Read at dump, set at restore. Why one module with both halves: each control
is read in one way (from outside with sched_getattr, sched_getaffinity,
ioprio_get or its /proc/PID file, or by the parasite with its PR_GET_* form)
and set back in one way, and keeping the two next to each
other is what makes "every setting is restored or refused" checkable by
reading one page. Controls no restore can set back with the runtime's
privileges (memory-deny-write-execute is irreversible and would forbid the
restorer's own mappings; KSM merging and securebits need care this runtime
does not take yet) are refused here, naming the setting.

Where each is set back: in the restoring child before the restorer runs
(it is still the runtime's copy, with root's privileges), except the
parent-death signal, which the kernel clears whenever the credentials
change, so the runtime sets it with an injected prctl after the restorer's
credential step (`set_after_creds`).
"""

import ctypes
import os

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError, RestoreError
from runtime.images.model import SchedAttr, TaskControls
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.files import read_text

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_TSC = 26
PR_SET_TIMERSLACK = 29
PR_MCE_KILL = 33
PR_MCE_KILL_CLEAR = 0
PR_MCE_KILL_SET = 1
PR_MCE_KILL_DEFAULT = 2
PR_SET_CHILD_SUBREAPER = 36
PR_SET_THP_DISABLE = 41

SCHED_FLAG_UTIL_CLAMP_MIN = 0x20
SCHED_FLAG_UTIL_CLAMP_MAX = 0x40
UTIL_CLAMP_DEFAULT = (0, 1024)
OOM_SCORE_ADJ_MAX = 1000
IOPRIO_WHO_PROCESS = 1

# /proc/PID/stat flags (field 9) of PR_SET_IO_FLUSHER, which needs CAP_SYS_RESOURCE to set again.
PF_MEMALLOC_NOIO = 0x00080000
PF_LOCAL_THROTTLE = 0x00100000


class SchedAttrStruct(ctypes.Structure):
    """struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes: with the utilisation clamps)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]




# -- dump ---------------------------------------------------------------------------------------

def read_sched(pid: int) -> SchedAttr:
    attr = SchedAttrStruct()
    if _libc.syscall(arch.NR_SCHED_GETATTR, pid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        raise DumpError(pid, f"sched_getattr: {os.strerror(ctypes.get_errno())}")
    return SchedAttr(policy=attr.sched_policy, flags=attr.sched_flags, nice_rank=20 - attr.sched_nice,
                     priority=attr.sched_priority, runtime=attr.sched_runtime, deadline=attr.sched_deadline,
                     period=attr.sched_period, util_min=attr.sched_util_min, util_max=attr.sched_util_max)


def read_io_priority(pid: int) -> int:
    got = _libc.syscall(arch.NR_IOPRIO_GET, IOPRIO_WHO_PROCESS, pid)
    if got < 0:
        raise DumpError(pid, f"ioprio_get: {os.strerror(ctypes.get_errno())}")
    return got


def check_stat_flags(pid: int, flags: int) -> None:
    """Refuse task flags (/proc/PID/stat field 9) that stand for a setting no restore can make."""
    if flags & (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE):
        raise DumpError(pid, "is an I/O flusher (PR_SET_IO_FLUSHER): setting it again needs CAP_SYS_RESOURCE; "
                             "not supported")


def controls_from(pid: int, prctl: dict[str, int], stopped: bool) -> TaskControls:
    """The controls from the parasite's PR_GET_* values; refuses the settings a restore cannot make."""
    def value(name: str, default: int) -> int:
        # A negative value is the errno of a kernel without the option: it is then at its default.
        got = prctl[name]
        return default if got < 0 else got

    if value("mdwe", 0):
        raise DumpError(pid, "has memory-deny-write-execute set (PR_SET_MDWE): it cannot be undone and "
                             "forbids the restore's own mappings; not supported")
    if value("memory_merge", 0):
        raise DumpError(pid, "has KSM merging of all its memory on (PR_SET_MEMORY_MERGE): setting it again "
                             "needs CAP_SYS_RESOURCE; not supported")
    if value("securebits", 0):
        raise DumpError(pid, f"has securebits {prctl['securebits']:#x} (PR_SET_SECUREBITS): not supported yet")
    return TaskControls(
        pdeath_signal=value("pdeath_sig", 0),
        child_subreaper=bool(value("child_subreaper", 0)),
        timer_slack_ns=value("timer_slack", 0),
        thp_disabled=bool(value("thp_disable", 0)),
        tsc_mode=value("tsc_mode", 1),
        mce_kill=value("mce_kill", PR_MCE_KILL_DEFAULT),
        sched=read_sched(pid),
        cpus=tuple(sorted(os.sched_getaffinity(pid))),
        io_priority=read_io_priority(pid),
        oom_score_adj_rank=int(read_text(pid, "oom_score_adj")) + OOM_SCORE_ADJ_MAX,
        coredump_filter=int(read_text(pid, "coredump_filter"), 16),
        stopped=stopped,
    )


# prctl settings kept per thread that a restored thread inherits from the leader (clone copies them):
# a thread with its own value is refused. Its parent-death signal a new thread never inherits.
PER_THREAD_PRCTL = ("timer_slack", "tsc_mode", "mce_kill", "securebits")


def check_thread_controls(pid: int, tid: int, thread: dict[str, int], leader: dict[str, int]) -> None:
    """Refuse a thread whose per-thread prctl settings (the parasite read them in it) are not the leader's."""
    for name in PER_THREAD_PRCTL:
        if thread[name] != leader[name]:
            raise DumpError(pid, f"thread {tid} has its own {name} ({thread[name]}, the leader's is {leader[name]}):"
                                 " not supported")
    if thread["pdeath_sig"] > 0:
        raise DumpError(pid, f"thread {tid} has a parent-death signal of its own ({thread['pdeath_sig']}): "
                             "not supported")


Scheduling = tuple[SchedAttr, tuple[int, ...], int]  # sched_getattr, CPU affinity, ioprio_get of one task


def read_scheduling(tid: int) -> Scheduling:
    return read_sched(tid), tuple(sorted(os.sched_getaffinity(tid))), read_io_priority(tid)


def thread_differences(leader: Scheduling, tid: int) -> tuple[SchedAttr | None, tuple[int, ...] | None, int | None]:
    """A thread's scheduling attributes, CPU affinity and I/O priority, each None where it is the leader's.

    leader: read_scheduling of the leader (or the task standing for it), read once for all threads.
    """
    return tuple(None if own == theirs else own for own, theirs in zip(read_scheduling(tid), leader))


# -- restore ------------------------------------------------------------------------------------

def _prctl(pid: int, what: str, *args: int) -> None:
    if _libc.prctl(*(ctypes.c_ulong(a) for a in args), *([ctypes.c_ulong(0)] * (5 - len(args)))) != 0:
        raise RestoreError(pid, f"prctl {what}: {os.strerror(ctypes.get_errno())}")


def set_own_name(pid: int, comm: str) -> None:
    """The calling thread's name (what a zombie still shows of itself); the kernel keeps 15 bytes."""
    name = ctypes.create_string_buffer(os.fsencode(comm)[:15], 16)
    if _libc.prctl(PR_SET_NAME, name, 0, 0, 0) != 0:
        raise RestoreError(pid, f"prctl PR_SET_NAME: {os.strerror(ctypes.get_errno())}")


def set_dumpable(pid: int, dumpable: bool) -> None:
    _prctl(pid, "PR_SET_DUMPABLE", PR_SET_DUMPABLE, int(dumpable))


def set_in_child(pid: int, controls: TaskControls) -> None:
    """Set every control but the parent-death signal on the calling task (the restoring child)."""
    _prctl(pid, "PR_SET_CHILD_SUBREAPER", PR_SET_CHILD_SUBREAPER, int(controls.child_subreaper))
    if controls.timer_slack_ns:
        _prctl(pid, "PR_SET_TIMERSLACK", PR_SET_TIMERSLACK, controls.timer_slack_ns)
    _prctl(pid, "PR_SET_THP_DISABLE", PR_SET_THP_DISABLE, int(controls.thp_disabled))
    _prctl(pid, "PR_SET_TSC", PR_SET_TSC, controls.tsc_mode)
    if controls.mce_kill == PR_MCE_KILL_DEFAULT:
        _prctl(pid, "PR_MCE_KILL", PR_MCE_KILL, PR_MCE_KILL_CLEAR)
    else:
        _prctl(pid, "PR_MCE_KILL", PR_MCE_KILL, PR_MCE_KILL_SET, controls.mce_kill)
    try:
        os.sched_setaffinity(0, controls.cpus)
    except OSError as exc:
        raise RestoreError(pid, f"CPU affinity {list(controls.cpus)}: {exc.strerror} "
                                f"(this machine's CPUs: {sorted(os.sched_getaffinity(0))})") from exc
    set_sched(pid, 0, controls.sched)
    if _libc.syscall(arch.NR_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, controls.io_priority) != 0:
        raise RestoreError(pid, f"ioprio_set {controls.io_priority:#x}: {os.strerror(ctypes.get_errno())}")
    _write_own_proc_file(pid, "oom_score_adj", str(controls.oom_score_adj_rank - OOM_SCORE_ADJ_MAX))
    _write_own_proc_file(pid, "coredump_filter", f"{controls.coredump_filter:#x}")


def _write_own_proc_file(pid: int, name: str, value: str) -> None:
    try:
        with open(f"/proc/self/{name}", "w") as f:
            f.write(value)
    except OSError as exc:
        raise RestoreError(pid, f"{name} {value}: {exc.strerror}") from exc


def set_sched(pid: int, tid: int, sched: SchedAttr) -> None:
    """sched_setattr on thread tid (0: the caller) of process pid."""
    # A kernel without CONFIG_UCLAMP_TASK reports 0..0 and refuses the clamp flags.
    clamped = (sched.util_min, sched.util_max) not in (UTIL_CLAMP_DEFAULT, (0, 0))
    attr = SchedAttrStruct(
        size=ctypes.sizeof(SchedAttrStruct), sched_policy=sched.policy,
        sched_flags=sched.flags | ((SCHED_FLAG_UTIL_CLAMP_MIN | SCHED_FLAG_UTIL_CLAMP_MAX) if clamped else 0),
        sched_nice=20 - sched.nice_rank, sched_priority=sched.priority, sched_runtime=sched.runtime,
        sched_deadline=sched.deadline, sched_period=sched.period,
        sched_util_min=sched.util_min, sched_util_max=sched.util_max)
    if _libc.syscall(arch.NR_SCHED_SETATTR, tid, ctypes.byref(attr), 0) != 0:
        which = f"sched_setattr of thread {tid}" if tid else "sched_setattr"
        raise RestoreError(pid, f"{which} (policy {sched.policy}, nice {20 - sched.nice_rank}, "
                                f"priority {sched.priority}): {os.strerror(ctypes.get_errno())}")


def set_thread_differences(pid: int, tid: int, sched: SchedAttr | None, cpus: tuple[int, ...] | None,
                           io_priority: int | None) -> None:
    """From outside, on a restored thread: what it had apart from the leader (a new thread inherits the leader's)."""
    if io_priority is not None and _libc.syscall(arch.NR_IOPRIO_SET, IOPRIO_WHO_PROCESS, tid, io_priority) != 0:
        raise RestoreError(pid, f"ioprio_set {io_priority:#x} of thread {tid}: {os.strerror(ctypes.get_errno())}")
    if cpus is not None:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError as exc:
            raise RestoreError(pid, f"CPU affinity {list(cpus)} of thread {tid}: {exc.strerror}") from exc
    if sched is not None:
        set_sched(pid, tid, sched)


def set_after_creds(pid: int, controls: TaskControls, remote_syscall) -> None:
    """The parent-death signal, through the tracer's injected syscall: a credential change clears it."""
    if not controls.pdeath_signal:
        return
    result = remote_syscall(arch.NR_PRCTL, PR_SET_PDEATHSIG, controls.pdeath_signal)
    if result != 0:
        raise RestoreError(pid, f"prctl PR_SET_PDEATHSIG {controls.pdeath_signal}: {os.strerror(-result)}")
