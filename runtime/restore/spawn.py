"""The tree put back in place: each member forks its children with their PIDs, in their sessions and groups.

Why the members fork each other and not the runtime: a process's parent is
whoever forked it, so each restoring child (a copy of the runtime, like the
root) forks its own children with clone3 and set_tid, and each of those
goes on from this same code. The order is the kernel's: a session is made
by its leader (setsid) before it forks the members that inherit it, and a
group leader makes its group (setpgid) before it forks; the tree's shared
open files are opened by the nearest common ancestor of their holders
before it forks them, so each holder inherits the one open file.

Then every member reports CREATED on the report pipe and waits on its own
go pipe. The runtime has seized each (with PTRACE_O_EXITKILL) by the time
it lets them all go on: only when every process exists can each join its
group (setpgid needs the group's leader), and report JOINED. A stand-in
for a gone session or group leader (images/sessions.py) waits for its
last go, sent once every member has joined, and exits; its creator reaps
it. A zombie waits too, until the runtime has seen every other member to
its restorer's trap; then it exits with its dumped status, which its
parent finds as it had left it. The others become their processes
(restore/child.py) and enter the restorer.

The pipes carry no data a member could misread: a go is one byte (the
root's first, the length of the runtime's rseq registration); EOF means the
runtime is gone, and the member exits. Every failure is written as one line
to the member's own error pipe.
"""

import os
import signal
import struct
from dataclasses import dataclass

from runtime.files import pipe as pipe_kind, table, unix, unlinked
from runtime.images.model import Creds, FileEntry, Pipe, TreeProcess, UnixSocket
from runtime.kernel.clone import clone_with_pid
from runtime.restore import child as restore_child
from runtime.task import controls as task_controls

REPORT = struct.Struct("<iI")  # (pid, stage): far below PIPE_BUF, so every write is whole
CREATED, JOINED = 1, 2
ROOT_GO = struct.Struct("<I")  # the length of the runtime's glibc rseq registration
GO = b"g"


@dataclass(frozen=True)
class SharedOpen:
    """A shared open file a member opens before it forks its holders, with the first holder's file identity."""

    entry: FileEntry
    fd: int  # its slot, the same in every process of the tree
    creds: Creds  # whose permissions it is opened with
    holder: int  # that holder's pid, for messages

    def make(self) -> None:
        with restore_child.acting_as(self.creds):
            table.open_shared(self.entry, self.fd, self.holder)


@dataclass(frozen=True)
class PipeOpen:
    """A pipe a member makes before it forks the holders of its ends: each end at its slot."""

    pipe: Pipe
    ends: tuple[tuple[FileEntry, int], ...]  # (entry, slot)
    creds: Creds  # a FIFO is reopened by path with the first holder's file identity
    holder: int  # the first holder's pid, for messages
    caller: tuple[tuple[bool, int], ...] = ()  # an external pipe: (reading, the caller's fd) of each end held

    def make(self) -> None:
        with restore_child.acting_as(self.creds):
            pipe_kind.make(self.pipe, list(self.ends), self.holder, dict(self.caller))


@dataclass(frozen=True)
class SocketOpen:
    """A unix socket, or a connected pair, a member makes before it forks their holders."""

    sockets: tuple[UnixSocket, ...]
    ends: tuple[tuple[FileEntry, int], ...]  # (entry, slot)
    creds: Creds  # a socket bound to a path is bound with the first holder's file identity
    holder: int  # the first holder's pid, for messages

    def make(self) -> None:
        with restore_child.acting_as(self.creds):
            unix.make(list(self.sockets), list(self.ends), self.holder)


@dataclass(frozen=True)
class UnlinkedOpen:
    """An open file of a memfd or a deleted file (the runtime made the file) a member makes before it forks."""

    entry: FileEntry
    fd: int  # its slot
    file: int  # the runtime's descriptor of the memfd or deleted file, inherited
    holder: int  # the first holder's pid, for messages

    def make(self) -> None:
        unlinked.make(self.entry, self.fd, self.file, self.holder)


Made = SharedOpen | PipeOpen | SocketOpen | UnlinkedOpen  # what a member makes for the processes it forks


@dataclass(frozen=True)
class Member:
    """One process of the tree as the restore creates it, or a stand-in for a gone session or group leader."""

    node: TreeProcess
    plan: restore_child.ChildPlan | None  # None for a zombie or a stand-in
    children: tuple[int, ...]  # the pids it forks, in order (stand-ins first)
    go_fd: int  # the read end of its go pipe
    err_fd: int  # the write end of its error pipe
    opens: tuple[Made, ...]  # the files it makes for its holders before forking
    pgid: int  # the group it joins (the caller's for a shell job's outside group)
    new_session: bool  # it makes its session (setsid) before it forks
    stand_in: bool = False  # images/sessions.py: it exits once every member has joined its group
    adopted: bool = False  # forked by a session's stand-in with CLONE_PARENT: its parent is the stand-in's
    reaps: tuple[int, ...] = ()  # the stand-ins it forked, which it reaps once they have exited

    @property
    def zombie(self) -> bool:
        return self.plan is None and not self.stand_in


@dataclass(frozen=True)
class TreePlan:
    """Every member, in creation order (the root first), and the fds the runtime keeps to itself."""

    members: dict[int, Member]
    root: int  # the tree's root (a member forked by a stand-in, if its session's leader is gone)
    report_fd: int  # the write end of the report pipe
    runtime_fds: tuple[int, ...]  # the go pipes' write ends, the error pipes' and the report pipe's read ends

    @property
    def first(self) -> Member:
        """The member the runtime forks: the root, or the stand-in that makes the root's session."""
        return next(iter(self.members.values()))


def run(tree: TreePlan, pid: int, rseq_len: int | None = None) -> None:
    """A member's whole life up to the restorer: never returns (restore/child.py takes over, or os._exit).

    rseq_len: None for the first member, which reads it from its first go; the others inherit it.
    """
    member = tree.members[pid]
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        if rseq_len is None:
            for fd in tree.runtime_fds:
                os.close(fd)
            rseq_len = ROOT_GO.unpack(_read_go(member, ROOT_GO.size))[0]
        if member.new_session:
            os.setsid()
        elif member.pgid == pid:
            os.setpgid(0, 0)
        for shared in member.opens:
            shared.make()
        for child_pid in member.children:
            if clone_with_pid(child_pid, same_parent=tree.members[child_pid].adopted) == 0:
                run(tree, child_pid, rseq_len)
        _close_others(tree, pid)
        _report(tree, pid, CREATED)
        _read_go(member, len(GO))
        if member.stand_in:
            # Its session or group is made: it waits until every member has joined, then goes.
            task_controls.set_own_name(pid, member.node.comm)
            os.close(tree.report_fd)
            _read_go(member, len(GO))
            _reap(member)
            os._exit(0)
        if os.getpgid(0) != member.pgid:
            os.setpgid(0, member.pgid)
        _report(tree, pid, JOINED)
        os.close(tree.report_fd)
        _reap(member)
        if member.zombie:
            _read_go(member, len(GO))
            die(member.node)
        os.close(member.go_fd)
    except Exception as exc:
        restore_child.report_failure(exc, member.err_fd)
        os._exit(1)
    restore_child.run(member.plan, member.err_fd, rseq_len)


def _read_go(member: Member, size: int) -> bytes:
    data = os.read(member.go_fd, size)
    if len(data) != size:
        os._exit(1)  # the runtime is gone: the half-restored tree goes with it
    return data


def _reap(member: Member) -> None:
    """The stand-ins this member forked: gone once every member has joined its group."""
    for pid in member.reaps:
        os.waitpid(pid, 0)


def _report(tree: TreePlan, pid: int, stage: int) -> None:
    os.write(tree.report_fd, REPORT.pack(pid, stage))


def _close_others(tree: TreePlan, pid: int) -> None:
    """The other members' pipe ends, once this one's children (which needed their own) exist."""
    for other, member in tree.members.items():
        if other != pid:
            for fd in (member.go_fd, member.err_fd):
                os.close(fd)


def die(node: TreeProcess) -> None:
    """End as the zombie did: its name, and its wait status (an exit code, or death by a signal).

    Never with a core dump: not dumpable, the kernel writes no core file and
    runs no core_pattern helper, so a status that had the core bit comes
    back without it.
    """
    task_controls.set_own_name(node.pid, node.comm)
    status = node.zombie_status
    number = status & 0x7F
    if number:
        task_controls.set_dumpable(node.pid, False)
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
        os.kill(os.getpid(), number)
    os._exit(status >> 8 & 0xFF)
