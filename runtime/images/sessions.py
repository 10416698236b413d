"""Sessions and process groups of a tree: which a restore can make again, and the stand-ins it needs for that.

Why a rule of its own: the kernel lets a process make a session only for
itself (setsid), inherit its parent's at fork, or join a group of its own
session whose leader exists (setpgid). A restore forks every process from
its parent, so each session must be made by its leader or inherited, and
each group needs a leader. The dump refuses a tree this rule cannot make,
the loader refuses such an image, and the restore plans from it: one rule
for the three (runtime/dump/refusals.py, images/checks.py, restore/).

A leader may be gone while its session or group lives on (a shell pipeline
whose first command exited; a daemon whose session leader exited after it
forked). The restore then forks a stand-in with the leader's PID, as criu
does, which makes the session or group and exits once every member is in;
its creator reaps it. A session stand-in forks the members at the top of
the session (those whose parent is outside it) with CLONE_PARENT, so they
are in its session yet children of their own parent: which needs them all
to have one parent. The root's own session or group outside the tree is
the restoring caller's for a shell job, and needs no stand-in.
"""

from dataclasses import dataclass

from runtime.images.model import TreeProcess

RUNTIME = 0  # the creator of a stand-in the restoring runtime forks itself (the root's session's)


@dataclass(frozen=True)
class StandIn:
    """A process the restore forks with a gone leader's PID, to make its session or group."""

    pid: int
    session: bool  # it makes a session (setsid: and the group of its id); else a group only
    creator: int  # the process that forks it, RUNTIME for the runtime
    adopts: tuple[int, ...] = ()  # a session's stand-in: the members it forks with CLONE_PARENT


class ShapeError(Exception):
    """A session or group the restore cannot make: pid, and why."""

    def __init__(self, pid: int, reason: str):
        super().__init__(f"pid {pid}: {reason}")
        self.pid = pid
        self.reason = reason


def stand_ins(processes: tuple[TreeProcess, ...], shell_job: bool) -> tuple[StandIn, ...]:
    """The stand-ins a restore of processes needs (session stand-ins first); ShapeError if it cannot make them."""
    root = processes[0]
    by_pid = {node.pid: node for node in processes}
    outside_session = root.sid if shell_job and root.sid != root.pid else None
    outside_group = root.pgid if shell_job and root.pgid != root.pid else None
    gone_sessions: dict[int, list[TreeProcess]] = {}  # sid -> its members whose parent is not in it
    for node in processes:
        parent_session = by_pid[node.ppid].sid if node is not root else outside_session
        if node.sid in (node.pid, parent_session):
            continue
        if node.sid in by_pid:
            raise ShapeError(node.pid, f"its session {node.sid} is not its parent's ({parent_session}), though "
                                       "its leader is in the tree (it was reparented): not supported")
        gone_sessions.setdefault(node.sid, []).append(node)
    made: list[StandIn] = []
    for sid, tops in gone_sessions.items():
        parents = sorted({RUNTIME if node is root else node.ppid for node in tops})
        if len(parents) > 1:
            raise ShapeError(tops[0].pid, f"its session {sid} has lost its leader, and its members have different "
                                          f"parents ({', '.join(str(p) for p in parents)}): a stand-in leader can "
                                          "make it for the children of one parent only: not supported")
        made.append(StandIn(sid, True, parents[0], tuple(node.pid for node in tops)))
    adopted_by = {pid: stand_in.pid for stand_in in made for pid in stand_in.adopts}
    groups: dict[int, int] = {}  # a gone group's id -> its session
    for node in processes:
        if node.pgid in by_pid or node.pgid == outside_group:
            leader_session = by_pid[node.pgid].sid if node.pgid in by_pid else outside_session
            if leader_session != node.sid:
                raise ShapeError(node.pid, f"its process group {node.pgid} is led from session {leader_session}, "
                                           f"not its own {node.sid}")
            continue
        session = node.pgid if node.pgid in gone_sessions else groups.get(node.pgid, node.sid)
        if session != node.sid:
            raise ShapeError(node.pid, f"its process group {node.pgid} is in session {session}, not its own "
                                       f"{node.sid}")
        if node.pgid in gone_sessions or node.pgid in groups:
            continue
        groups[node.pgid] = node.sid
        creator = adopted_by.get(node.pid, RUNTIME if node is root else node.ppid)
        made.append(StandIn(node.pgid, False, creator))
    return tuple(made)
