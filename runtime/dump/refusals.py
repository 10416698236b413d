"""What a dump refuses, in one place: every check runs on the seized process before any parasite.

Why one module: docs/state.md lists every piece of process state Linux
exposes with its verdict (dumped, refused, ignored); the refusals of that
table are made here and nowhere else, so the table and the code can be read
side by side. A check names the PID and the state it refuses, and runs
before infection, so a refused process has only been stopped and released.

The VmFlags table is the model of the rule "anything not known is refused":
every two-letter flag /proc/PID/smaps prints is either handled (by the
mapping's kind, protection or madvise advice), ignored with a reason, or
refused; a flag this table has never seen is refused too.
"""

import functools
import os

from runtime.errors import DumpError
from runtime.images import sessions
from runtime.images.model import KERNEL_MAPPING_KINDS, TreeProcess, Vma, VmaKind
from runtime.kernel.procfs.fds import FileKind, OpenFile
from runtime.kernel.procfs.files import proc_path, read_text, translated
from runtime.kernel.procfs.maps import VSYSCALL, Mapping
from runtime.kernel.procfs import sysvipc
from runtime.kernel.procfs.stat import Stat
from runtime.kernel.procfs.status import Status, read_status, read_thread_status
from runtime.kernel.procfs.timers import TimerEntry
from runtime.mm import sysv
from runtime.task import controls as task_controls
from runtime.task import posix_timers

# Namespaces the restored process would silently leave: it is created in the runtime's own.
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts")

# Every smaps VmFlag (fs/proc/task_mmu.c): None where restore brings it back or it is the kernel's to set,
# else why the dump refuses it.
VMFLAGS: dict[str, str | None] = {
    # The protection and sharing: the mapping is recreated with them.
    "rd": None, "wr": None, "ex": None, "sh": None, "mr": None, "mw": None, "me": None, "ms": None,
    "gd": None,  # MAP_GROWSDOWN: the Vma's growsdown
    "ac": None,  # VM_ACCOUNT: the kernel charges private writable memory itself
    "nr": None,  # MAP_NORESERVE: only commit accounting, which the restoring kernel does by its own policy
    "sd": None,  # soft-dirty: tracking state (not built into this kernel)
    "de": None,  # VM_DONTEXPAND: the kernel sets it on its special mappings, which it recreates
    "io": None, "pf": None,  # the kernel's own special mappings only: others are refused in check_mappings
    # madvise advice, restored (VmaAdvice)
    "dc": None, "wf": None, "dd": None, "hg": None, "nh": None, "mg": None, "sr": None, "rr": None,
    "lo": "locked pages (mlock) are not restored yet",
    "lf": "locked-on-fault pages (mlock2 MLOCK_ONFAULT) are not restored yet",
    "ht": "hugetlbfs mappings are not supported yet",
    "sf": "synchronous page faults (MAP_SYNC, DAX) are not supported",
    "mm": "mixed page mappings (VM_MIXEDMAP, device drivers) are not supported",
    "um": "userfaultfd registrations (missing pages) are not supported yet",
    "uw": "userfaultfd registrations (write protection) are not supported yet",
    "ui": "userfaultfd registrations (minor faults) are not supported yet",
    "ss": "shadow stacks are not supported yet",
    "sl": "sealed mappings (mseal) are not supported yet",
    "ar": "architecture-specific mapping flags (VM_ARCH_1) are not supported",
    "gu": "guard regions (MADV_GUARD_INSTALL) are not restored yet",
}


def check_process(pid: int, view: int, tids: list[int], status: Status, stat: Stat, mappings: tuple[Mapping, ...],
                  open_files: tuple[OpenFile, ...], timers: tuple[TimerEntry, ...]) -> None:
    """Raise DumpError for the first piece of state a restore could not bring back.

    view: the live task whose /proc files show the process (the pid, unless its leader exited).
    """
    check_namespaces(pid, view)
    check_security(pid, status)
    check_threads(pid, tids, status)
    task_controls.check_stat_flags(pid, stat.flags)
    posix_timers.check(pid, timers, tids)
    check_memory_policy(pid, view)
    check_mappings(pid, mappings)
    check_file_locks(pid, open_files, mappings)


def check_tree(nodes: tuple[TreeProcess, ...], shell_job: bool) -> None:
    """Sessions and process groups a restore can make again (images/sessions.py has the rule).

    The root's own session or group led by a live process outside the dump
    is the restoring caller's only for a shell job; one whose leader is gone
    is made again by a stand-in, as are gone leaders inside the tree.
    """
    root = nodes[0]
    if not shell_job and not root.sid == root.pgid == root.pid:
        which = f"session {root.sid}" if root.sid != root.pid else f"process group {root.pgid}"
        leader = root.sid if root.sid != root.pid else root.pgid
        if os.path.exists(proc_path(leader, "stat")):
            raise DumpError(root.pid, f"its {which} is led by pid {leader}, outside the dump: dump with --shell-job "
                                      "(-j) to restore it into the restoring caller's session and group, or start "
                                      "it with setsid")
    try:
        sessions.stand_ins(nodes, shell_job)
    except sessions.ShapeError as exc:
        raise DumpError(exc.pid, exc.reason) from None


def check_namespaces(pid: int, view: int) -> None:
    for name in NAMESPACES:
        ours = _namespace(os.getpid(), name)
        theirs = _namespace(view, name)
        if theirs is not None and theirs != ours:
            raise DumpError(pid, f"lives in another {name} namespace ({theirs}, the runtime's is {ours}): "
                                 "restoring namespaces is not supported yet")


def _namespace(pid: int, name: str) -> str | None:
    """The namespace's link text (e.g. 'uts:[4026531838]'), None where this kernel has no such namespace."""
    if not os.path.lexists(proc_path(os.getpid(), f"ns/{name}")):
        return None
    with translated(pid, f"ns/{name}"):
        return os.readlink(proc_path(pid, f"ns/{name}"))


def check_threads(pid: int, tids: list[int], leader: Status) -> None:
    """Every thread is restored with the leader's credentials; per-thread security state is refused as the leader's."""
    for tid in tids[1:]:
        status = read_thread_status(pid, tid)
        if status.creds != leader.creds:
            raise DumpError(pid, f"thread {tid} has credentials of its own (a raw setuid/setgid/capset in one thread):"
                                 " not supported")
        check_security(pid, status, f"thread {tid} ")


def check_security(pid: int, status: Status, who: str = "") -> None:
    """who: "" for the process (its leader's status), "thread TID " for another thread's."""
    if status.seccomp:
        mode = {1: "strict", 2: "filter"}.get(status.seccomp, str(status.seccomp))
        raise DumpError(pid, f"{who}runs under seccomp ({mode} mode): restoring seccomp filters is not supported yet")
    ours = _own_speculation()
    if status.speculation != ours:
        raise DumpError(pid, f"{who}has speculation controls set (PR_SET_SPECULATION_CTRL: "
                             f"{', '.join(status.speculation)}; a new process gets {', '.join(ours)}): "
                             "not supported yet")
    if status.thread_features.strip():
        raise DumpError(pid, f"{who}uses x86 thread features ({status.thread_features}): not supported yet")


@functools.cache
def _own_speculation() -> tuple[str, ...]:
    """What a new process gets: the runtime's own controls, read once (a dump checks every thread)."""
    return read_status(os.getpid()).speculation


def check_memory_policy(pid: int, view: int) -> None:
    """A NUMA policy (set_mempolicy, mbind) shows in numa_maps as something other than 'default'."""
    if not os.path.exists(proc_path(os.getpid(), "numa_maps")):
        return  # a kernel without NUMA: there is no policy to lose
    for line in read_text(view, "numa_maps").splitlines():
        address, policy = line.split()[:2]
        if policy != "default":
            raise DumpError(pid, f"mapping at {address}: NUMA memory policy {policy!r} is not supported yet")


def check_mappings(pid: int, mappings: tuple[Mapping, ...]) -> None:
    """Refuse the mappings a restore could not bring back, naming each and what it is."""
    for m in mappings:
        if m.name == VSYSCALL:
            continue
        where = f"mapping {m.start:#x}-{m.end:#x} {m.name or '(anonymous)'}"
        if m.inode and not m.file_backed and not m.shared_anon:
            raise DumpError(pid, f"{where}: mappings of this kind of file are not supported yet")
        if ({"io", "pf"} & m.vmflags) and m.vma().kind not in KERNEL_MAPPING_KINDS:
            raise DumpError(pid, f"{where}: device (VM_IO/VM_PFNMAP) mappings are not supported yet")
        for flag in sorted(m.vmflags):
            if flag not in VMFLAGS:
                raise DumpError(pid, f"{where}: VmFlag {flag!r} is unknown to this runtime: refused rather than lost")
            if VMFLAGS[flag] is not None:
                raise DumpError(pid, f"{where}: {VMFLAGS[flag]} (VmFlag {flag!r})")
    attaches = tuple(m.vma() for m in mappings if m.sysv_key is not None)
    if attaches:
        sysv.check_attaches(pid, attaches, sysvipc.read_shm())


def check_sysv_segments(vmas: dict[int, tuple[Vma, ...]]) -> None:
    """A SysV segment attached by a process outside the tree is refused (runtime/mm/sysv.py says why)."""
    if any(v.kind is VmaKind.SYSV for mapped in vmas.values() for v in mapped):
        sysv.check_held_inside(vmas, sysvipc.read_shm())


def check_file_locks(pid: int, open_files: tuple[OpenFile, ...], mappings: tuple[Mapping, ...]) -> None:
    """Locks on regular files with a name are taken again (files/regular.py); a lock on anything else is refused.

    So is a POSIX lock on a file the process maps: the restorer closes the
    descriptor it maps it through, and closing any descriptor of a file drops
    the process's POSIX locks on it.
    """
    mapped = {m.name for m in mappings}
    for f in open_files:
        if f.locks and (f.kind not in (FileKind.REGULAR, FileKind.DIRECTORY) or not f.nlink):
            raise DumpError(pid, f"fd {f.fd} ({f.description}) holds a file lock ({f.locks[0]}): "
                                 "restoring locks on this kind of file is not supported yet")
        if f.link in mapped and any(" POSIX " in lock for lock in f.locks):
            raise DumpError(pid, f"fd {f.fd} ({f.description}) holds a POSIX lock on a file the process also maps: "
                                 "not supported yet")
