"""Every named step of a tree's dump and restore made to fail: the whole tree is left running, or none of it is.

A dump of a tree that fails at any step leaves every process of the tree
as it was (bash still waits for its children, which still run); a restore
that fails at any step, in any member, its restorer's steps included,
leaves no process of the tree behind (not even a zombie: the runtime reaps
what it killed), and the same image then restores.
"""

import os
import signal

import pytest

from restore_support import wait_for
from runtime import faults, restore
from runtime.dump import DumpOptions, dump
from runtime.errors import ReviveError
from runtime.faults import InjectedFault
from runtime.kernel.procfs.status import read_status
from test_fault_injection import restorer_steps
from tree_support import descendants, exists, links, reap, start_tree, subreaper

BASH_TREE = ["bash", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"]


@pytest.fixture(scope="module")
def reaper():
    with subreaper():
        yield


def start_bash_tree(workdir):
    tree = start_tree(BASH_TREE, workdir, ready=False)
    wait_for(lambda: len(descendants(tree.root)) == 3 and read_status(tree.root).state == "S"
             and all(read_status(pid).name == "sleep" for pid in descendants(tree.root)[1:]),
             what="bash to start its two sleeps (exec'd) and wait")
    tree.pids = descendants(tree.root)
    return tree


@pytest.mark.parametrize("step", faults.DUMP_STEPS)
def test_a_tree_dump_failing_at_each_step_leaves_every_process_running_as_before(step, reaper, tmp_path,
                                                                                  monkeypatch):
    tree = start_bash_tree(tmp_path)
    try:
        before = links(tree.pids)
        monkeypatch.setenv(faults.ENV, step)
        with pytest.raises(InjectedFault):
            dump(tree.root, tmp_path / "img", DumpOptions())
        monkeypatch.delenv(faults.ENV)
        assert not (tmp_path / "img").exists()
        assert links(tree.pids) == before
        # Just detached, each goes back to its sleep.
        wait_for(lambda: all(read_status(pid).tracer_pid == 0 and read_status(pid).state == "S" for pid in tree.pids),
                 what="every process to be untraced and asleep again")
        # bash is still the parent: it sees its children end, and its wait returns.
        for child in tree.pids[1:]:
            os.kill(child, signal.SIGTERM)
        assert tree.target.proc.wait(timeout=10) == 0
    finally:
        tree.stop()


@pytest.fixture(scope="module")
def dumped_tree(reaper, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dumped-tree")
    tree = start_bash_tree(workdir)
    try:
        before = links(tree.pids)
        tree.dump()
    finally:
        tree.stop()
    return tree, before


@pytest.mark.parametrize("step", faults.RESTORE_STEPS + tuple(restorer_steps()))
def test_a_tree_restore_failing_at_each_step_leaves_no_process_and_the_pids_free(step, dumped_tree, monkeypatch):
    tree, before = dumped_tree
    monkeypatch.setenv(faults.ENV, step)
    with pytest.raises(ReviveError):
        restore.restore(str(tree.images), detach=True)
    monkeypatch.delenv(faults.ENV)
    assert not [pid for pid in tree.pids if exists(pid)], f"a failed restore at {step} left processes"
    assert restore.restore(str(tree.images), detach=True) == 0
    try:
        assert links(tree.pids) == before
    finally:
        reap(tree.pids)


def test_a_runtime_killed_during_a_tree_restore_takes_every_member_with_it(dumped_tree, monkeypatch):
    """PTRACE_O_EXITKILL and the members' go pipes: nothing of the tree runs on without its runtime."""
    tree, before = dumped_tree
    child = os.fork()
    if child == 0:
        try:
            os.environ[faults.ENV] = "restore.handover:die"
            restore.restore(str(tree.images), detach=True)
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    reap(tree.pids)  # the killed members' orphans are ours, the subreaper's
    assert not [pid for pid in tree.pids if exists(pid)]
    assert restore.restore(str(tree.images), detach=True) == 0
    try:
        assert links(tree.pids) == before
    finally:
        reap(tree.pids)
