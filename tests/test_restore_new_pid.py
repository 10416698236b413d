"""`restore --new-pid`: copies of one image, each in a PID namespace of its own, run beside the original."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from dump_support import target_path
from restore_support import REPO, Restorable, lines, run_cli, wait_for
from tree_support import children, descendants, exists, start_tree


@pytest.fixture
def counter(tmp_path, reaper):
    proc = Restorable([str(target_path("core_counter"))], tmp_path)
    for n in range(1, 4):
        os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: ["counter", str(n)] in lines(proc.out, "counter"), what=f"counter {n}")
    yield proc
    proc.stop()
    _reap_our_orphans()


def _reap_our_orphans():
    """The namespaces' helpers, ours to reap once the restore command that forked them has exited."""
    deadline = time.monotonic() + 10
    while children(os.getpid()) and time.monotonic() < deadline:
        for pid in children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def counter_of(pid: int, address: int) -> int:
    """The target's global counter, read from its memory: each copy has its own."""
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return int.from_bytes(mem.read(8), "little")


def nspids(pid: int) -> list[int]:
    status = open(f"/proc/{pid}/status").read()
    return [int(n) for n in next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[1:]]


def restore_copy(images) -> int:
    done = run_cli("restore", "-D", str(images), "-d", "--new-pid")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("restored in a new PID namespace: pid "), done.stdout
    return int(done.stdout.split()[-1])


def test_two_copies_and_the_original_each_continue_with_the_dumped_pid_inside(counter):
    counter.dump(leave_running=True)
    address = int(counter.target.info["counter"], 16)
    copies = [restore_copy(counter.images), restore_copy(counter.images)]
    assert len({counter.pid, *copies}) == 3
    for copy in copies:
        # Outside a new PID, inside the dumped one; every thread keeps its TID inside.
        assert nspids(copy) == [copy, counter.pid]
        inner_tids = sorted(nspids(int(tid))[-1] for tid in os.listdir(f"/proc/{copy}/task"))
        assert inner_tids == sorted(int(tid) for tid in os.listdir(f"/proc/{counter.pid}/task"))
    # Each goes on from the dumped 3 on its own: 1, 2 and 3 more signals.
    for more, pid in enumerate([counter.pid, *copies], 1):
        for _ in range(more):
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.05)
    for more, pid in enumerate([counter.pid, *copies], 1):
        wait_for(lambda: counter_of(pid, address) == 3 + more, what=f"pid {pid}'s counter at {3 + more}")
    for copy in copies:
        os.kill(copy, signal.SIGKILL)
        wait_for(lambda: not exists(copy), what="the copy to go with its namespace")


def test_without_d_the_command_waits_and_relays_a_signal_to_the_copy(counter):
    counter.dump(leave_running=True)
    command = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(counter.images), "--new-pid"],
                               cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        copy = wait_for(lambda: [pid for pid in _grandchildren(command.pid) if nspids(pid)[-1] == counter.pid],
                        what="the copy")[0]
        command.send_signal(signal.SIGTERM)  # relayed: the copy dies of it, and the command says so
        assert command.wait(timeout=10) == 128 + signal.SIGTERM
        assert not exists(copy) and exists(counter.pid)
    finally:
        if command.poll() is None:
            command.kill()
        command.communicate()


def _grandchildren(pid: int) -> list[int]:
    """Every process below pid (the helper, the namespace's init, the copy)."""
    return [p for p in descendants(pid)[1:] if exists(p)]


def test_a_corrupt_image_is_refused_and_leaves_no_process(counter):
    counter.dump(leave_running=True)
    pages = next(counter.images.glob("pages-*.img"))
    with open(pages, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    done = run_cli("restore", "-D", str(counter.images), "-d", "--new-pid")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("revive: ") and "does not match inventory.json" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert children(os.getpid()) == [counter.pid] or not [p for p in children(os.getpid()) if p != counter.pid]


def test_new_pid_with_shell_job_is_a_usage_error(counter):
    done = run_cli("restore", "-D", str(counter.images), "--new-pid", "-j")
    assert done.returncode == 2 and "--new-pid" in done.stderr


def test_a_tree_copy_keeps_every_pid_inside(reaper, tmp_path):
    """A shell with two sleeping children, copied beside the original: inside, each process has its dumped PID."""
    tree = start_tree(["bash", "-c", 'sleep 1000 & sleep 1000 & echo "ready pids=$$,$(jobs -p | paste -sd,)"; wait'],
                      tmp_path)
    try:
        dumped = sorted(int(pid) for pid in tree.info["pids"].split(","))
        tree.dump(leave_running=True)
        copy = restore_copy(tree.images)
        inside = sorted(nspids(pid)[-1] for pid in descendants(copy))  # the copy's root and its children
        assert inside == dumped and nspids(copy) == [copy, tree.root]
        assert all(exists(pid) for pid in dumped), "the original tree runs on"
        os.kill(copy, signal.SIGKILL)
        wait_for(lambda: not exists(copy), what="the copy to go with its namespace")
    finally:
        tree.stop()
        _reap_our_orphans()
