"""Freezing a process tree: the root and every descendant seized, zombies noted, until nothing new appears.

Why parents first, and why again: a process not yet seized may fork at
any time, but a seized one cannot, so each process's children are read
once it is stopped; a child seen then is seized next. Only reparenting
adds a child to a stopped process (an orphan given to a child subreaper
when its own parent exits), so once every process is seized the children
of all of them are read again, until a pass finds none new.

A zombie cannot be seized and needs not be: what a restore needs of it
(its ids and its wait status) is in its /proc/PID/stat, and its frozen
parent cannot reap it meanwhile.

A process in vfork (waiting, uninterruptibly, for its child to exec or
exit) never reaches the stop PTRACE_INTERRUPT asks for: seizing it would
hang the dump. Parent and child then share one mm, which kcmp(KCMP_VM)
tells before anything is seized; so does any other pair of processes
sharing memory through clone(CLONE_VM), which a restore could not make
again either.
"""

import logging
from dataclasses import dataclass, field

from runtime.errors import AccessDenied, DumpError, NoSuchProcess, ReviveError, ZombieProcess
from runtime.infect.seize import Seized, list_tids, seize
from runtime.kernel import kcmp
from runtime.kernel.procfs.files import read_text
from runtime.kernel.procfs.stat import Stat, read_stat
from runtime.kernel.procfs.status import read_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Zombie:
    """A dead process of the tree its parent has not reaped: its ids, and its wait status."""

    stat: Stat
    status: int  # the wait status its parent would get (/proc/PID/stat's exit_code)


@dataclass
class FrozenTree:
    """Every live process of a tree seized, its zombies noted; release() lets them all go."""

    root: int
    seized: dict[int, Seized] = field(default_factory=dict)  # live processes, each parent before its children
    zombies: dict[int, Zombie] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)  # pid -> parent pid, for every process but the root

    @property
    def pids(self) -> list[int]:
        """Every process of the tree, live or zombie, each parent before its children."""
        ordered, pending = [], [self.root]
        children: dict[int, list[int]] = {}
        for pid, parent in self.parents.items():
            children.setdefault(parent, []).append(pid)
        while pending:
            pid = pending.pop(0)
            ordered.append(pid)
            pending.extend(sorted(children.get(pid, ())))
        return ordered

    def release(self, leave_stopped: bool = False) -> None:
        """Detach every process, children first; the first failure is raised once all are released."""
        failures = []
        for pid in reversed(list(self.seized)):
            try:
                self.seized[pid].release(leave_stopped)
            except ReviveError as exc:
                failures.append(exc)
        self.seized.clear()
        if failures:
            raise failures[0]


def children_of(seized: Seized) -> list[int]:
    """The children of every thread of a seized process (each thread's children are its own list)."""
    return sorted({child for tid in seized.tids for child in _children(seized.worker, tid)})


def _children(pid: int, tid: int) -> list[int]:
    """A thread's children, none if the thread has exited meanwhile (the process is not stopped yet)."""
    try:
        return [int(c) for c in read_text(pid, f"task/{tid}/children").split()]
    except NoSuchProcess:
        return []


def _has_memory(pid: int) -> bool:
    """Whether the task still has an address space (statm reads all zeros once it has let go of it)."""
    return read_text(pid, "statm").split()[0] != "0"


def check_not_vfork(pid: int) -> None:
    """Refuse a process that shares its memory with a child or its parent (vfork, CLONE_VM)."""
    children = sorted({child for tid in list_tids(pid) for child in _children(pid, tid)})
    for other in children + [read_status(pid).ppid]:
        try:
            # Two tasks that have both let go of their memory on their way out compare equal too.
            shared = other > 0 and kcmp.same_vm(pid, other) and _has_memory(pid) and _has_memory(other)
        except (DumpError, NoSuchProcess):
            continue  # gone meanwhile, or the root's parent, which may be anyone's
        if shared:
            what = "its child" if other in children else "its parent"
            raise DumpError(pid, f"shares its memory with {what} {other} (vfork, waiting for an exec or exit, "
                                 "or clone(CLONE_VM)): not supported; dump again once it has exec'd or exited")


def freeze_tree(root: int) -> FrozenTree:
    """Seize root and all its descendants; a ProcessError (everything released) if that cannot be done."""
    tree = FrozenTree(root)
    try:
        pending = [root]
        while pending:
            while pending:
                pending.extend(reversed(_freeze_one(tree, pending.pop())))
            # Reparented orphans are the only children a stopped process can gain.
            for pid, seized in list(tree.seized.items()):
                for child in children_of(seized):
                    if child not in tree.seized and child not in tree.zombies:
                        tree.parents[child] = pid
                        pending.append(child)
    except BaseException:
        tree.release()
        raise
    log.info("tree of %d: %d processes, %d zombies", root, len(tree.seized), len(tree.zombies))
    return tree


def _freeze_one(tree: FrozenTree, pid: int) -> list[int]:
    """Seize pid, or note it as a zombie; its children. One gone meanwhile is not in the tree."""
    if pid in tree.seized or pid in tree.zombies:
        return []
    try:
        check_not_vfork(pid)
        seized = seize(pid)
    except (ZombieProcess, NoSuchProcess, AccessDenied):
        if pid == tree.root:
            raise
        # A child that exited meanwhile is a zombie of its stopped parent (or gone, if the parent ignores
        # SIGCHLD): ptrace refuses it, and the parent's wait must find it after the restore as before.
        try:
            stat = read_stat(pid)
        except NoSuchProcess:
            tree.parents.pop(pid, None)
            return []
        if stat.state != "Z":
            raise
        tree.zombies[pid] = Zombie(stat, stat.exit_code)
        return []
    tree.seized[pid] = seized
    children = children_of(seized)
    tree.parents.update({child: pid for child in children})
    return children
