"""Sessions and process groups whose leader is gone: made again by stand-ins, or refused naming the process.

A shell pipeline whose first command exited leaves a group without its
leader; a daemon that forked and let its session leader exit leaves a
session without one. The kernel only lets a process make a session for
itself and join a group whose leader exists, so the restore forks a
stand-in with the gone leader's PID, which makes the session or group and
exits once every member is in (images/sessions.py).
"""

import os
import signal

import pytest

from restore_support import wait_for
from runtime.errors import DumpError
from runtime import dump, restore
from tree_support import descendants, exists, links, reap, start_tree, subreaper

PYTHON = "/usr/bin/python3"

# The root is a child subreaper, so the orphans of the leaders that exit stay in its tree.
PRELUDE = """
import ctypes, os, signal, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
def forever():
    signal.signal(signal.SIGUSR1, lambda *_: os.write(1, f"usr1 {os.getpid()}\\n".encode()))
    while True:
        time.sleep(1)
"""

# A leader that makes its group (setpgid) or session (setsid), forks one member of it, and exits: a shell
# pipeline's first command that ended, or a daemon's double fork.
LEADER_EXITS = """
leader = os.fork()
if leader == 0:
    {make}
    if os.fork() == 0:
        forever()
    os._exit(0)
os.waitpid(leader, 0)
time.sleep(0.1)
os.write(1, f"ready leader={{leader}}\\n".encode())
forever()
"""
GONE_GROUP = PRELUDE + LEADER_EXITS.format(make="os.setpgid(0, 0)")
GONE_SESSION = PRELUDE + LEADER_EXITS.format(make="os.setsid()")

# Two members of a gone session with different parents: the first orphaned while its grandparent P is
# no subreaper yet (it goes to the root), the second once P is one (it goes to P); then the leader exits.
SPLIT_SESSION = PRELUDE + """
p = os.fork()
if p == 0:
    leader = os.fork()
    if leader == 0:
        os.setsid()
        middles = []
        for delay in (0.0, 0.6):
            middle = os.fork()
            if middle == 0:
                if os.fork() == 0:
                    forever()
                time.sleep(delay)
                os._exit(0)
            middles.append(middle)
        for middle in middles:
            os.waitpid(middle, 0)
        os._exit(0)
    time.sleep(0.3)
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    os.waitpid(leader, 0)
    os.write(1, f"ready leader={leader}\\n".encode())
    forever()
forever()
"""

# A daemon: its session's leader exited, and it is the process dumped.
DAEMON = """
import os, sys, time
leader = os.fork()
if leader == 0:
    os.setsid()
    daemon = os.fork()
    if daemon == 0:
        os.write(1, f"ready pid={os.getpid()} leader={os.getsid(0)}\\n".encode())
        while True:
            time.sleep(1)
    os._exit(0)
os.waitpid(leader, 0)
while True:
    time.sleep(1)
"""


@pytest.fixture
def started(tmp_path):
    trees = []
    with subreaper():
        try:
            yield trees
        finally:
            for tree in trees:
                tree.stop()


def start(started, tmp_path, program: str):
    tree = start_tree([PYTHON, "-c", program], tmp_path)
    started.append(tree)
    wait_for(lambda: len(descendants(tree.root)) >= 2, what="the tree to form")
    tree.pids = descendants(tree.root)
    return tree


def test_a_group_whose_leader_exited_comes_back_with_the_same_id_and_members(started, tmp_path):
    """The member keeps its group id (the stand-in that made it again is gone), and killpg reaches it."""
    tree = start(started, tmp_path, GONE_GROUP)
    leader = int(tree.info["leader"])
    (member,) = tree.pids[1:]
    before = links(tree.pids)
    assert before[member][2] == leader and not exists(leader)
    tree.dump()
    tree.restore()
    assert links(tree.pids) == before
    assert not exists(leader)  # the stand-in made the group and left
    os.killpg(leader, signal.SIGUSR1)
    wait_for(lambda: f"usr1 {member}" in tree.out.read_text(), what="the group's member to get SIGUSR1")


def test_a_session_whose_leader_exited_comes_back_with_its_member_under_its_own_parent(started, tmp_path):
    """A daemon's double fork: the member keeps its session and group ids and its parent, the root."""
    tree = start(started, tmp_path, GONE_SESSION)
    leader = int(tree.info["leader"])
    (member,) = tree.pids[1:]
    before = links(tree.pids)
    assert before[member][1:] == (tree.root, leader, leader)
    tree.dump()
    tree.restore()
    assert links(tree.pids) == before
    assert not exists(leader)
    assert os.getsid(member) == leader and os.getsid(tree.root) == tree.root


def test_a_daemon_whose_session_leader_exited_is_dumped_alone_and_comes_back_in_its_session(started, tmp_path):
    """Without --shell-job: its session's leader is gone, not outside, so a stand-in makes it again."""
    launcher = start_tree([PYTHON, "-c", DAEMON], tmp_path)
    started.append(launcher)
    daemon, leader = int(launcher.info["pid"]), int(launcher.info["leader"])
    launcher.pids.append(daemon)  # stop() kills and reaps it, restored or not
    wait_for(lambda: not exists(leader) and links([daemon])[daemon][1] == os.getpid(),
             what="the session leader to exit and the daemon to become our child (we are the subreaper)")
    name = links([daemon])[daemon][0]
    dump.dump(daemon, tmp_path / "daemon")
    reap([daemon])
    assert restore.restore(str(tmp_path / "daemon"), detach=True) == 0
    assert links([daemon])[daemon] == (name, os.getpid(), leader, leader)
    assert not exists(leader)  # the stand-in is gone, reaped by us, its creator


def test_a_session_whose_members_have_different_parents_is_refused_and_left_running(started, tmp_path):
    """No one stand-in can fork members for two parents: the dump says so and the tree runs on."""
    tree = start(started, tmp_path, SPLIT_SESSION)
    wait_for(lambda: len(descendants(tree.root)) == 4, what="both members and their parents")
    tree.pids = descendants(tree.root)
    leader = int(tree.info["leader"])
    with pytest.raises(DumpError, match=rf"its session {leader} has lost its leader, and its members have "
                                        r"different parents"):
        tree.dump()
    assert all(exists(pid) for pid in tree.pids)
