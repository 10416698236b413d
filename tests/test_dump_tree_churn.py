"""A tree whose processes fork and exit all the time is dumped whole: every process with its parent, never half.

The dump seizes each process before it reads its children, so a fork it
has not seen yet happens in a process it has not stopped yet, and shows in
that process's children list once it is stopped; a child that exits before
it is seized is a zombie of a stopped parent, or gone. Each image must be
a consistent tree (the loader checks parents, sessions and groups), and
one of them restores and runs on.
"""

import os

from restore_support import lines, wait_for
from runtime import restore
from runtime.dump import DumpOptions, dump
from runtime.images import loader
from tree_support import proc_stat, reap, start_tree, subreaper

PYTHON = "/usr/bin/python3"
DUMPS = 12

# Children come and go; some fork a grandchild on their way; the parent reaps them and counts.
CHURN = """
import itertools, os, time
os.write(1, f"ready pid={os.getpid()}\\n".encode())
for n in itertools.count():
    child = os.fork()
    if child == 0:
        if n % 3 == 0 and os.fork() == 0:
            time.sleep(0.004)
            os._exit(0)
        time.sleep(0.002)
        os._exit(0)
    os.waitpid(child, 0)
    os.write(1, f"tick {n}\\n".encode())
"""


def session_members(session: int) -> list[int]:
    """Every process of the tree's session, wherever it hangs."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if proc_stat(int(name)).sid == session:
                    found.append(int(name))
            except OSError:
                pass  # gone meanwhile
    return found


def reap_session(session: int) -> None:
    """Kill and reap the whole session, again until none is left: a child may fork while its siblings die."""
    while members := session_members(session):
        reap(members)


def test_a_tree_that_forks_and_reaps_all_the_time_is_dumped_whole_and_restores(tmp_path):
    with subreaper():
        tree = start_tree([PYTHON, "-c", CHURN], tmp_path)
        try:
            sizes = []
            for attempt in range(DUMPS):
                images = tmp_path / f"img-{attempt}"
                dump(tree.root, images, DumpOptions(leave_running=True))
                with loader.load(images) as checkpoint:  # every check of the tree passed
                    nodes = checkpoint.tree.processes
                    sizes.append(len(nodes))
                    assert nodes[0].pid == tree.root
                    assert {node.ppid for node in nodes[1:]} <= {node.pid for node in nodes}
            assert max(sizes) > 1, "no dump caught a child: the test proves nothing"
            # The last image, restored: the parent goes on forking, reaping and counting.
            tree.target.proc.kill()
            tree.target.proc.wait()
            # Children and grandchildren, orphaned since, are ours (the subreaper's): alive or as zombies they keep
            # the session's id taken.
            reap_session(tree.root)
            # It writes from its offset at the dump on, over what the original wrote after it: once past the
            # old end, the file is one unbroken count again.
            written = tree.out.stat().st_size
            assert restore.restore(str(tmp_path / f"img-{DUMPS - 1}"), detach=True) == 0
            wait_for(lambda: tree.out.stat().st_size > written + 4096, what="the restored parent to count on")
            ticks = [int(words[1]) for words in lines(tree.out, "tick")]
            assert ticks == list(range(len(ticks))), "a tick was lost or repeated"
        finally:
            tree.pids = []
            tree.stop()  # the started root, through its Popen (its PID is the restored root's too)
            reap_session(tree.root)
