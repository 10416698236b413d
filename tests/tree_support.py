"""Test support for the process-tree tests: start a tree, know its PIDs, dump and restore it, reap every process.

Why a module of its own: a tree leaves processes behind in ways a single
process does not. When the dump kills a tree, or a test kills a restored
one, a grandchild whose parent died is reparented to the nearest child
subreaper ancestor, else to pid 1, which on this machine never reaps: a
zombie there keeps its PID (and so the next restore of that PID) taken
forever. So every tree test runs as a child subreaper (`subreaper()`) and
reaps every PID of the trees it started, by PID: waitpid(-1) would take
other tests' children too. A PID that is not our child yet while
/proc/PID still exists is being reparented to us (its parent is still
exiting): `reap` waits for it.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from dump_support import Target
from restore_support import wait_for
from runtime import dump, restore
from runtime.kernel.clone import clone_with_pid
from runtime.kernel.libc import libc
from runtime.kernel.procfs.stat import Stat, parse_stat

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
REAP_TIMEOUT = 5.0


@contextlib.contextmanager
def subreaper():
    """This process as child subreaper: the orphans of the trees it starts become its children to reap."""
    before = ctypes.c_int()
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER)")
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


def proc_stat(pid: int) -> Stat:
    """/proc/PID/stat parsed (state, ppid, pgid, sid, and a zombie's wait status as exit_code)."""
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat(pid, f.read())


def state(pid: int) -> str:
    return proc_stat(pid).state


def links(pids: Iterable[int]) -> dict[int, tuple[str, int, int, int]]:
    """What `ps -o comm,ppid,pgid,sid` says of each pid: the place of each process in the tree."""
    return {pid: (s.comm, s.ppid, s.pgid, s.sid) for pid in pids for s in [proc_stat(pid)]}


def children(pid: int) -> list[int]:
    """The children of every thread of pid (/proc/PID/task/TID/children), [] once it is gone."""
    found = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    found.extend(int(child) for child in f.read().split())
    return sorted(set(found))


def descendants(root: int) -> list[int]:
    """root and every process below it, each parent before its children."""
    found, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        if pid not in found:
            found.append(pid)
            queue.extend(children(pid))
    return found


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def reap(pids: Iterable[int], timeout: float = REAP_TIMEOUT) -> dict[int, int]:
    """SIGKILL every pid (a no-op on a zombie), then wait for each by PID; their wait statuses.

    A pid gone from /proc and not our child was reaped by its own parent
    (or before); one still in /proc that is not our child after the
    timeout is reported: a zombie of pid 1 is one forever.
    """
    pids = list(dict.fromkeys(pids))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    statuses, left = {}, list(pids)
    deadline = time.monotonic() + timeout
    while left:
        for pid in list(left):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                if not exists(pid):
                    left.remove(pid)
                continue
            if got == pid:
                statuses[pid] = status
                left.remove(pid)
        if left and time.monotonic() > deadline:
            raise AssertionError("not reaped: " + ", ".join(f"{pid} {describe(pid)}" for pid in left))
        if left:
            time.sleep(0.005)
    return statuses


def describe(pid: int) -> str:
    try:
        s = proc_stat(pid)
    except OSError:
        return "(gone)"
    return f"({s.comm}, state {s.state}, parent {s.ppid})"


def wait_reaped(pid: int, timeout: float = REAP_TIMEOUT) -> int:
    """The wait status of pid once it exits by itself (not killed here), waiting for it to become our child."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if not exists(pid):
                raise AssertionError(f"pid {pid} was reaped by someone else") from None
            got = 0
        if got == pid:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} did not exit: {describe(pid)}")
        time.sleep(0.005)


class Tree:
    """A started process tree, dumped and restored in this process; stop() kills and reaps every known PID.

    pids: the tree's processes, root first: the ready line's `pids=` for the
    process_tree target, else what the test sets (e.g. `descendants(root)`).
    """

    def __init__(self, target: Target, workdir: Path):
        self.target = target
        self.workdir = workdir
        self.images = workdir / "images"
        self.pids = [int(pid) for pid in target.info["pids"].split(",")] if "pids" in target.info else [target.pid]

    @property
    def root(self) -> int:
        return self.target.pid

    @property
    def info(self) -> dict[str, str]:
        return self.target.info

    @property
    def out(self) -> Path:
        return self.target.out

    def dump(self, leave_running: bool = False) -> None:
        # The processes the tree started itself (a subprocess) are dumped too, and killed with it.
        self.pids += [pid for pid in descendants(self.root) if pid not in self.pids]
        dump.dump(self.root, self.images, dump.DumpOptions(leave_running=leave_running))
        if not leave_running:
            self.reap_killed()

    def reap_killed(self) -> None:
        """After a dump that killed the tree: every PID free again for the restore."""
        self._reap_started_root()
        reap(self.pids)

    def restore(self) -> None:
        assert restore.restore(str(self.images), detach=True) == 0

    def stop(self) -> None:
        """Kill and reap the tree as it is now: its known PIDs and whatever else runs below its root."""
        found = list(self.pids)
        if exists(self.root):
            found += descendants(self.root)
        for pid in self.pids:
            found += descendants(pid) if exists(pid) else []
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.root, signal.SIGKILL)
        self._reap_started_root()
        reap(found)

    def _reap_started_root(self) -> None:
        # The started root is reaped through its Popen: left unreaped there, a Popen that is garbage collected
        # goes on a list subprocess polls with waitpid(PID), which would take the restored root with that PID.
        if self.target.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.target.proc.kill()
            self.target.proc.wait(timeout=REAP_TIMEOUT)


def start_tree(argv: list[str], workdir: Path, ready: bool = True, timeout: float = 10.0,
               pass_fds: tuple[int, ...] = ()) -> Tree:
    """Start argv as the root of a new session, stdin /dev/null, stdout and stderr a file (and pass_fds).

    With ready, wait for its "ready key=value ..." line; a tree that does not
    get ready is killed and reaped whole, with every descendant it had.
    """
    out = workdir / f"out-{len(list(workdir.glob('out-*')))}.txt"
    with open(out, "w") as stdout, open(os.devnull) as stdin:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT, cwd=workdir,
                                pass_fds=pass_fds, start_new_session=True)
    target = Target(proc, out)
    if not ready:
        return Tree(target, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for line in out.read_text().splitlines():
            if line.startswith("ready "):
                target.info = dict(word.split("=", 1) for word in line.split()[1:])
                return Tree(target, workdir)
        time.sleep(0.01)
    Tree(target, workdir).stop()
    raise RuntimeError(f"{argv[0]} did not get ready: {out.read_text()!r}")


def occupy(pid: int) -> int:
    """A `sleep 1000` with exactly this PID (our child, to kill and reap); the PID is free now."""
    child = clone_with_pid(pid)
    if child == 0:
        try:
            os.execv("/bin/sleep", ["sleep", "1000"])
        finally:
            os._exit(127)
    try:
        wait_for(lambda: proc_stat(child).comm == "sleep", what=f"the sleep holding pid {pid}")
    except BaseException:
        reap([child])
        raise
    return child


def ticks(out: Path) -> dict[int, list[list[int]]]:
    """Each process's "tick PID OWN [SHARED]" lines as [OWN] or [OWN, SHARED], per PID, in order."""
    seen: dict[int, list[list[int]]] = {}
    for line in out.read_text().splitlines():
        words = line.split()
        if words and words[0] == "tick":
            seen.setdefault(int(words[1]), []).append([int(w) for w in words[2:]])
    return seen


def wait_ticks(out: Path, pids: Iterable[int], more: int, timeout: float = 10.0) -> None:
    """Wait until each pid printed `more` tick lines beyond what it has printed so far."""
    pids = list(pids)
    start = {pid: len(ticks(out).get(pid, [])) for pid in pids}
    wait_for(lambda: all(len(ticks(out).get(pid, [])) >= start[pid] + more for pid in pids), timeout=timeout,
             what=f"{more} more ticks of {pids}")


def assert_counts_on(out: Path, pids: Iterable[int]) -> None:
    """Each pid's OWN counts 10, 20, 30, ... in its tick lines: never reset, no gap, no repeat."""
    seen = ticks(out)
    for pid in pids:
        own = [words[0] for words in seen.get(pid, [])]
        assert own == [10 * n for n in range(1, len(own) + 1)], f"pid {pid} counted {own}"
