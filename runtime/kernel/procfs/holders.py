"""Who holds a PID: the answer to clone3's EEXIST, from /proc.

Why: a restore needs the dumped PID free, and "pid is in use" is no help
when `ps` shows no process with that PID. The kernel keeps a PID taken while
any of these uses it: a live process or thread, a zombie its parent has not
reaped, or a process group or session other processes still carry. Each has
a different remedy (kill it, make the parent reap it, end the group), so the
message names which one it is. /proc changes while it is read: processes
that vanish meanwhile are skipped.
"""

import os

from runtime.errors import ProcessError, ProcfsError
from runtime.kernel.procfs.stat import Stat, read_stat
from runtime.kernel.procfs.status import read_status


def describe_holder(pid: int) -> str:
    """One clause saying what keeps pid taken, e.g. 'held by a zombie of sleep, not yet reaped by 12 (bash)'."""
    task = _stat(pid)
    if task is not None:
        tgid = _tgid(pid)
        if tgid != pid:
            return f"held by a thread of process {tgid} ({_name(tgid)})"
        if task.state == "Z":
            return f"held by a zombie of {task.comm}, not yet reaped by its parent {task.ppid} ({_name(task.ppid)})"
        return f"held by the live process {task.comm} (parent {task.ppid} {_name(task.ppid)})"
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        other = _stat(int(entry))
        if other is not None and pid in (other.pgid, other.sid):
            what = "session" if other.sid == pid else "process group"
            members.append(f"{entry} ({other.comm}, {what})")
    if members:
        shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
        return f"still the process group or session id of {shown}"
    return "in use, by no process this runtime can see (another PID namespace?)"


def _stat(pid: int) -> Stat | None:
    try:
        return read_stat(pid)
    except (ProcessError, ProcfsError):  # gone meanwhile, or not readable
        return None


def _tgid(pid: int) -> int:
    try:
        return read_status(pid).tgid
    except (ProcessError, ProcfsError):
        return pid


def _name(pid: int) -> str:
    if pid == 0:
        return "the kernel"
    task = _stat(pid)
    return task.comm if task is not None else "gone"
