"""Restore of process trees: every process comes back with its PID, parent, group, session, memory and state.

Every test runs with this process as child subreaper and reaps every PID
of the trees it started (tests/tree_support.py says why).
"""

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

from dump_support import target_path
from restore_support import lines, run_cli, wait_for
from runtime.errors import RestoreError
from runtime.kernel.kcmp import same_file
from tree_support import (assert_counts_on, describe, descendants, exists, links, occupy, proc_stat, reap,
                          start_tree, state, subreaper, ticks, wait_reaped, wait_ticks)

PYTHON = "/usr/bin/python3"  # the system interpreter, whatever the venv's layout
SYS_WAIT4 = 61

POOL_ITEMS = 40
PYTHON_POOL = f"""
import multiprocessing, os, time
def slow(i):
    time.sleep(0.2)
    os.write(1, f"done {{i}}\\n".encode())
    return i * i
if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(4) as pool:
        os.write(1, f"ready pid={{os.getpid()}}\\n".encode())
        total = sum(pool.map(slow, range({POOL_ITEMS}), chunksize=1))
    os.write(1, f"result {{total}}\\n".encode())
"""


@pytest.fixture
def start(tmp_path):
    """start(*argv, ready=True) -> a Tree started in tmp_path; every tree killed and reaped afterwards."""
    started = []

    def start(*argv: str, ready: bool = True):
        started.append(start_tree(list(argv), tmp_path, ready=ready))
        return started[-1]

    with subreaper():
        try:
            yield start
        finally:
            failures = []
            for tree in started:
                try:
                    tree.stop()
                except AssertionError as exc:
                    failures.append(str(exc))
            assert not failures, "; ".join(failures)


def process_tree(start, mode: str):
    return start(str(target_path("process_tree")), mode)


def pid_list(text: str) -> list[int]:
    return [int(pid) for pid in text.split(",")]


def shared_mapping(pid: int, address: int) -> tuple[str, str, str]:
    """(flags, device, inode) of pid's mapping at address: one MAP_SHARED object has one inode in all."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if int(fields[0].split("-")[0], 16) == address:
                return fields[1], fields[3], fields[4]
    raise AssertionError(f"pid {pid}: no mapping at {address:#x}")


def tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))


def test_restore_brings_back_a_three_level_tree_with_its_pids_parents_private_and_shared_memory(start):
    """7 processes: same PIDs and parents; private counters continue; all map the root's shared page again."""
    tree = process_tree(start, "counters")
    root, pids, address = tree.root, tree.pids, int(tree.info["shared"], 16)
    assert len(pids) == 7 and [links(pids)[pid][1] for pid in pids] == pid_list(tree.info["ppids"])
    wait_ticks(tree.out, pids, 2)
    before = links(pids)
    tree.dump()
    assert not [pid for pid in pids if exists(pid)]
    dumped = ticks(tree.out)
    tree.restore()
    assert links(pids) == before
    assert before[root][1] == os.getpid(), "the restored root is the restoring process's child"
    [(flags, _, inode)] = {shared_mapping(pid, address) for pid in pids}  # one object, mapped by all
    assert flags == "rw-s" and inode != "0"
    assert all(same_file(root, 1, 1, pid) for pid in pids[1:]), "stdout is one open file description"
    wait_ticks(tree.out, pids, 3)
    assert_counts_on(tree.out, pids)
    now = ticks(tree.out)
    counted_at_dump = dumped[root][-1][1]
    for pid in pids[1:]:
        # The first line after the restore may carry a value read before the dump: the later ones are read after.
        seen = [words[1] for words in now[pid][len(dumped[pid]):]]
        assert seen == sorted(seen) and seen[1] >= counted_at_dump and seen[-1] > seen[1], \
            f"pid {pid} saw the root's shared counter as {seen} after the restore ({counted_at_dump} at the dump)"


def test_restore_brings_back_bash_and_its_background_sleeps_and_its_wait_returns_when_they_die(start):
    """bash -c 'sleep & sleep & wait': same three PIDs and links; bash's wait4 sees its restored children exit."""
    tree = start("/bin/bash", "-c", "sleep 1000 & sleep 1000 & wait", ready=False)

    def sleeping() -> bool:
        kids = descendants(tree.root)[1:]
        return len(kids) == 2 and all(proc_stat(kid).comm == "sleep" for kid in kids)

    wait_for(sleeping, what="bash's two sleeps")
    wait_for(lambda: Path(f"/proc/{tree.root}/syscall").read_text().split()[0] == str(SYS_WAIT4), what="bash in wait4")
    tree.pids = descendants(tree.root)
    before = links(tree.pids)
    tree.dump()
    tree.restore()
    assert links(tree.pids) == before
    for sleep in tree.pids[1:]:
        os.kill(sleep, signal.SIGKILL)
    # `wait` with no operand returns 0 once no child is left; bash then exits with it.
    assert os.waitstatus_to_exitcode(wait_reaped(tree.root)) == 0
    assert not [pid for pid in tree.pids if exists(pid)], "bash reaped both sleeps"


def test_restore_brings_back_zombies_with_their_wait_status_for_their_parent_to_reap(start):
    """Zombies of exit(7) and of SIGTERM come back as zombies of the root; its waitpid(-1) gets 7 and SIGTERM."""
    tree = process_tree(start, "zombie")
    exited, killed = int(tree.info["exited"]), int(tree.info["killed"])
    zombies = {pid: (proc_stat(pid).state, proc_stat(pid).exit_code) for pid in (exited, killed)}
    assert zombies == {exited: ("Z", 7 << 8), killed: ("Z", signal.SIGTERM)}
    before = links(tree.pids)
    tree.dump()
    tree.restore()
    assert links(tree.pids) == before
    assert {pid: (proc_stat(pid).state, proc_stat(pid).exit_code) for pid in (exited, killed)} == zombies
    wait_ticks(tree.out, [tree.root], 2)
    os.kill(tree.root, signal.SIGUSR1)
    wait_for(lambda: len(lines(tree.out, "reaped")) == 2 or lines(tree.out, "error"), what="the reaping")
    assert not lines(tree.out, "error"), f"the root cannot wait for its zombies: {lines(tree.out, 'error')}"
    reaped = lines(tree.out, "reaped")
    assert sorted(reaped) == sorted([["reaped", str(exited), "exit", "7"],
                                     ["reaped", str(killed), "signal", str(int(signal.SIGTERM))]])
    assert not exists(exited) and not exists(killed)
    wait_ticks(tree.out, [tree.root], 2)
    assert_counts_on(tree.out, [tree.root])


def test_restore_keeps_the_session_and_two_pipeline_process_groups(start):
    """Same (ppid, pgid, sid) for all five; a signal to group A reaches exactly a1 and a2, the root's group only it."""
    tree = process_tree(start, "session")
    root, (a1, a2), (b1, b2) = tree.root, pid_list(tree.info["a"]), pid_list(tree.info["b"])
    before = links(tree.pids)
    assert {pid: before[pid][2:] for pid in tree.pids} == {root: (root, root), a1: (a1, root), a2: (a1, root),
                                                           b1: (b1, root), b2: (b1, root)}
    tree.dump()
    tree.restore()
    assert links(tree.pids) == before
    os.killpg(a1, signal.SIGUSR1)
    wait_for(lambda: len(lines(tree.out, "usr1")) >= 2, what="group A's handlers")
    os.killpg(root, signal.SIGUSR1)
    wait_for(lambda: len(lines(tree.out, "usr1")) >= 3, what="the root group's handler")
    wait_ticks(tree.out, [root], 2)  # time for a handler that should not have run
    got = [int(words[1]) for words in lines(tree.out, "usr1")]
    assert sorted(got[:2]) == sorted([a1, a2]) and got[2:] == [root]


def test_a_stopped_child_comes_back_stopped_while_its_parent_runs_and_sigcont_resumes_it(start):
    """The group-stopped child is restored in state T (not traced), ticks nothing, and counts on after SIGCONT."""
    tree = process_tree(start, "stopped")
    root, child = tree.root, int(tree.info["stopped"])
    assert state(child) == "T"
    tree.dump()
    tree.restore()
    assert state(child) == "T" and tracer(child) == 0
    wait_ticks(tree.out, [root], 3)
    assert len(ticks(tree.out)[child]) == 3 and state(child) == "T", "the stopped child ran"
    os.kill(child, signal.SIGCONT)
    wait_ticks(tree.out, [child], 3)
    assert_counts_on(tree.out, tree.pids)


def test_a_restored_childs_parent_death_signal_fires_when_its_restored_parent_dies(start):
    """PR_SET_PDEATHSIG of a child is kept and bound to its restored parent: not fired by the restore itself."""
    tree = process_tree(start, "pdeath")
    root, child = tree.root, int(tree.info["pdeath"])
    tree.dump()
    assert not lines(tree.out, "pdeath"), "the child ran after the dump: its parent-death signal when the root died"
    tree.restore()
    wait_ticks(tree.out, tree.pids, 3)
    assert not lines(tree.out, "pdeath"), "the parent-death signal fired during the restore"
    os.kill(root, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(wait_reaped(root)) == -signal.SIGKILL
    assert os.waitstatus_to_exitcode(wait_reaped(child)) == 0, "the child's SIGUSR2 handler exits 0"
    assert lines(tree.out, "pdeath") == [["pdeath", str(child), f"ppid={os.getpid()}"]]


def test_restore_keeps_a_file_offset_shared_by_parent_and_child(start):
    """One open file description in two processes: writes after the restore follow each other, none overwritten."""
    tree = process_tree(start, "shared_offset")
    root, writer, fd = tree.root, int(tree.info["writer"]), int(tree.info["fd"])
    shared = tree.workdir / "shared.txt"

    def write(pid: int, sig: int, who: str, n: int) -> None:
        os.kill(pid, sig)
        wait_for(lambda: ["wrote", str(pid), who, str(n)] in lines(tree.out, "wrote"), what=f"{who} {n} written")

    write(writer, signal.SIGUSR2, "C", 0)
    write(root, signal.SIGUSR1, "R", 0)
    tree.dump()
    tree.restore()
    assert same_file(root, fd, fd, writer)
    write(writer, signal.SIGUSR2, "C", 1)
    write(root, signal.SIGUSR1, "R", 1)
    assert shared.read_text() == "C 0\nR 0\nC 1\nR 1\n"


def test_a_restored_multiprocessing_pool_finishes_its_map_with_the_right_result(start):
    """Pool(4) dumped mid-map: its pipes with tasks and results in flight, its semaphores (deleted /dev/shm files
    mapped shared by all five processes) and its parent's handler threads come back; it returns the sum of all 40."""
    tree = start(PYTHON, "-c", PYTHON_POOL)
    wait_for(lambda: len(lines(tree.out, "done")) >= 8, what="the first results")
    tree.pids = descendants(tree.root)
    assert len(tree.pids) == 5
    tree.dump()
    assert len(lines(tree.out, "done")) < POOL_ITEMS, "dumped after the work was done: nothing to check"
    tree.restore()
    result = wait_for(lambda: lines(tree.out, "result"), timeout=20, what="the pool's result")
    assert result == [["result", str(sum(i * i for i in range(POOL_ITEMS)))]]
    assert sorted(int(words[1]) for words in lines(tree.out, "done")) == list(range(POOL_ITEMS))


def test_a_restore_with_one_pid_of_the_tree_taken_fails_naming_it_and_leaves_nothing(start):
    """A grandchild's PID held by another process: RestoreError naming it, no process of the tree left, holder alive."""
    tree = process_tree(start, "counters")
    tree.dump()
    taken = tree.pids[3]
    holder = occupy(taken)
    try:
        with pytest.raises(RestoreError, match=rf"(?<!\d){taken}(?!\d)"):
            tree.restore()

        def left() -> dict[int, str]:
            return {pid: describe(pid) for pid in tree.pids if pid != taken and exists(pid)}

        with contextlib.suppress(AssertionError):
            wait_for(lambda: not left(), timeout=2)
        assert not left(), f"the failed restore left processes of the tree: {left()}"
        assert state(holder) in "RS" and proc_stat(holder).comm == "sleep", "the holder is not the restore's"
    finally:
        reap([holder])


def test_a_tree_dumped_leaving_it_running_goes_on_untouched(start):
    """--leave-running: every process keeps its PID and parent, is not traced or stopped, and counts on."""
    tree = process_tree(start, "counters")
    wait_ticks(tree.out, tree.pids, 2)
    before = links(tree.pids)
    tree.dump(leave_running=True)
    assert links(tree.pids) == before
    assert all(tracer(pid) == 0 and state(pid) in "RS" for pid in tree.pids)
    wait_ticks(tree.out, tree.pids, 3)
    assert_counts_on(tree.out, tree.pids)


def test_show_prints_every_process_of_a_tree_dumped_with_the_cli(start):
    """`dump -t ROOT` through the CLI takes the whole tree; `show` names every PID and the root's command."""
    tree = process_tree(start, "counters")
    done = run_cli("dump", "-t", str(tree.root), "-D", str(tree.images))
    assert done.returncode == 0, done.stderr
    tree.reap_killed()
    shown = run_cli("show", str(tree.images))
    assert shown.returncode == 0, shown.stderr
    missing = [pid for pid in tree.pids if not re.search(rf"(?<!\d){pid}(?!\d)", shown.stdout)]
    assert not missing, f"show does not name {missing}"
    assert "process_tree" in shown.stdout
