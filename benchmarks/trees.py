"""Dump and restore wall time of process trees by size, and the image size of memory shared by a forked tree.

Times: a tree of N small processes is bash starting N-1 `sleep 1000` in
the background, then exec'ing `sleep 1000` itself: N sleeps, the root the
parent of the others, so the 1-process tree is a plain sleep and every
process added costs the same. Each tree is dumped with the real command
line into /dev/shm (which kills it), restored detached, checked whole
(every PID back, a sleep, under its parent) and killed. The floor is the
1-process tree in the same run: machine load here is noisy, so only
figures measured side by side compare; per process is (tN - t1) / (N - 1).
Each time is the median of --repeat runs.

Sizes: a python3 parent fills 100 MiB with random bytes, then forks 9
children that only sleep. Private memory (a bytearray) is shared by the
fork only copy-on-write, which the image does not keep: each process
saves its own copy, about 10 times one process's image. A MAP_SHARED
anonymous mapping inherited by the children is one object, saved once.
The floor is the same parent without children; the interpreters' own
memory, measured with no 100 MiB, is taken off to count copies saved.
Prints figures; asserts nothing but that every restored process is back.

This process is a child subreaper and waits for every process it starts
by PID: when a tree's root dies its children are reparented to us, and
pid 1 here never reaps, so a zombie left there would keep its PID, and the
next restore of that PID would fail.

usage: python benchmarks/trees.py [--sizes 1,10,100] [--repeat 3]
"""

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import SHM, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper
from runtime.kernel.procfs.stat import Stat, parse_stat

FLOOR_PROCESSES = 1
BASH = "/bin/bash"
PYTHON = "/usr/bin/python3"  # the system interpreter: a target, not the venv running the runtime
# bash -c SLEEP_TREE N: $0 is N.
SLEEP_TREE = "for ((i = 1; i < $0; i++)); do sleep 1000 & done; exec sleep 1000"
SHARED_MIB = 100
SHARED_CHILDREN = 9
# How long a killed process may take to become ours to reap (its parent exiting first) before it is reported.
REAP_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 30.0

# argv: SIZE CHILDREN private|shared. Random bytes: no page is zero, none alike. Written in chunks under malloc's
# mmap threshold (128 KiB): a bigger one, once freed, raises the threshold, and the next ones then leave about
# 1 MiB of random bytes in the heap of the parent, and of every child, counted as copies saved.
FILLED_TREE = """
import mmap, os, sys, time
size, children, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
memory = mmap.mmap(-1, size) if kind == "shared" else bytearray(size)
chunk = 1 << 16
for offset in range(0, size, chunk):
    memory[offset:offset + chunk] = os.urandom(min(chunk, size - offset))
pids = [os.getpid()]
for _ in range(children):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(1000)
    pids.append(pid)
os.write(1, ("ready pids=" + ",".join(map(str, pids)) + "\\n").encode())
while True:
    time.sleep(1000)
"""


def proc_stat(pid: int) -> Stat | None:
    """pid's /proc/PID/stat, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(pid, f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def describe(pid: int) -> str:
    stat = proc_stat(pid)
    return "gone" if stat is None else f"{stat.comm}, state {stat.state}, parent {stat.ppid}"


def children(pid: int) -> list[int]:
    """The children of pid's main thread (the only thread of a sleep or of these python3 targets)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def reap(pids: list[int]) -> None:
    """Wait for each pid, which must be dying: killed, or killed by the dump.

    ECHILD while /proc/PID still exists means its parent is still exiting
    and it is on its way to us, the subreaper: try again shortly.
    """
    deadline = time.monotonic() + REAP_TIMEOUT_S
    for pid in pids:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"pid {pid} was never reaped: {describe(pid)}")
            time.sleep(0.005)


class Started:
    """A target tree started in work; pids known once it is ready, root first. stop() kills and reaps it all."""

    def __init__(self, argv: list[str], work: Path):
        self.log = work / "out.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        self.root = self.proc.pid
        self.pids = [self.root]

    def reap_dumped(self) -> None:
        """After the dump killed the tree: the root through its Popen, the others as they come to us."""
        # Left unwaited, a Popen that is garbage collected is polled later with waitpid(PID): it would take the
        # restored root, which has that PID again.
        self.proc.wait()
        reap(self.pids[1:])

    def stop(self) -> None:
        """Kill the tree as it is now, the started or the restored one, and reap every process of it."""
        found = list(dict.fromkeys(self.pids + children(self.root)))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.root, signal.SIGKILL)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.returncode is None:
            self.proc.wait()
        reap(found)


def is_sleep(pid: int) -> bool:
    """pid runs sleep: a child bash forked that has exec'd, or the root once it has forked them all."""
    stat = proc_stat(pid)
    return stat is not None and stat.comm == "sleep"


def start_sleep_tree(n: int, work: Path) -> Started:
    """bash with n-1 sleep children, exec'd into a sleep itself once they all run."""
    tree = Started([BASH, "-c", SLEEP_TREE, str(n)], work)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        pids = [tree.root, *children(tree.root)]
        if len(pids) == n and all(is_sleep(pid) for pid in pids):
            tree.pids = pids
            return tree
        if tree.proc.poll() is not None or time.monotonic() > deadline:
            tree.stop()
            raise SystemExit(f"the {n}-process sleep tree did not start: {tree.log.read_text()!r}")
        time.sleep(0.01)


def check_restored(tree: Started) -> None:
    """Exit naming the first process of the tree not back as a sleep under its original parent."""
    for pid in tree.pids:
        stat = proc_stat(pid)
        parent = None if pid == tree.root else tree.root
        if stat is None or stat.comm != "sleep" or stat.state == "Z" or (parent and stat.ppid != parent):
            raise SystemExit(f"{len(tree.pids)}-process tree: pid {pid} is not restored: {describe(pid)}")


def bench_once(n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-trees-", dir=SHM))
    images = work / "images"
    tree = None
    try:
        tree = start_sleep_tree(n, work)
        dump_s, _ = runtime("dump", "-t", str(tree.root), "-D", str(images))
        tree.reap_dumped()
        restore_s, _ = runtime("restore", "-D", str(images), "-d")
        check_restored(tree)
    finally:
        if tree is not None:
            tree.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"dump": dump_s, "restore": restore_s}


def bench(n: int, repeat: int) -> dict:
    """Median of each figure over repeat runs of bench_once."""
    runs = [bench_once(n) for _ in range(repeat)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def image_bytes(mib: int, children_count: int, kind: str) -> int:
    """Bytes in the image directory of a python3 tree holding mib MiB of kind memory, dumped once."""
    work = Path(tempfile.mkdtemp(prefix="revive-bench-trees-", dir=SHM))
    images = work / "images"
    tree = None
    try:
        tree = Started([PYTHON, "-c", FILLED_TREE, str(mib * 2**20), str(children_count), kind], work)
        ready = wait_for_line(tree.log, "ready", timeout=READY_TIMEOUT_S)
        tree.pids = [int(pid) for pid in ready.split("pids=", 1)[1].split(",")]
        runtime("dump", "-t", str(tree.root), "-D", str(images))
        tree.reap_dumped()
        tree = None
        return sum(f.stat().st_size for f in images.rglob("*") if f.is_file())
    finally:
        if tree is not None:
            tree.stop()
        shutil.rmtree(work, ignore_errors=True)


def per_process_ms(t_n: float, t_1: float, n: int) -> str:
    return f"{(t_n - t_1) / (n - 1) * 1000:.1f}" if n > FLOOR_PROCESSES else "-"


def print_times(sizes: list[int], repeat: int) -> None:
    results = {FLOOR_PROCESSES: bench(FLOOR_PROCESSES, repeat)}
    for n in sizes:
        if n not in results:
            results[n] = bench(n, repeat)
    floor = results[FLOOR_PROCESSES]
    print(f"median of {repeat} runs; floor: the same commands on a {FLOOR_PROCESSES}-process tree (a sleep)")
    print(f"{'processes':>9} {'dump s':>8} {'restore s':>10} {'dump ms/proc':>13} {'restore ms/proc':>16} "
          f"{'dump x1':>8} {'restore x1':>11}")
    for n in sizes:
        r = results[n]
        print(f"{n:>9} {r['dump']:>8.3f} {r['restore']:>10.3f} "
              f"{per_process_ms(r['dump'], floor['dump'], n):>13} "
              f"{per_process_ms(r['restore'], floor['restore'], n):>16} "
              f"{r['dump'] / floor['dump']:>8.2f} {r['restore'] / floor['restore']:>11.2f}")
    print("times are wall clock of the whole command (python start-up included); "
          "every restored process was seen back under its parent")


def print_sizes() -> None:
    processes = 1 + SHARED_CHILDREN
    empty = {1: image_bytes(0, 0, "private"), processes: image_bytes(0, SHARED_CHILDREN, "private")}
    rows = [(1, "private", image_bytes(SHARED_MIB, 0, "private")),
            (processes, "private, forked (copy-on-write)", image_bytes(SHARED_MIB, SHARED_CHILDREN, "private")),
            (processes, "MAP_SHARED anonymous, inherited", image_bytes(SHARED_MIB, SHARED_CHILDREN, "shared"))]
    floor = rows[0][2]
    print()
    print(f"image of {SHARED_MIB} MiB of random bytes in a python3 parent; floor: the parent alone; "
          f"copies: (image - the same tree without the {SHARED_MIB} MiB) / {SHARED_MIB} MiB")
    print(f"{'processes':>9}  {'memory':<32} {'image MiB':>10} {'x1':>6} {'copies':>7}")
    for n, kind, size in rows:
        print(f"{n:>9}  {kind:<32} {size / 2**20:>10.1f} {size / floor:>6.2f} "
              f"{(size - empty[n]) / (SHARED_MIB * 2**20):>7.2f}")
    print(f"without the {SHARED_MIB} MiB: 1 process {empty[1] / 2**20:.1f} MiB, "
          f"{processes} processes {empty[processes] / 2**20:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="processes per tree (1..500), comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per time; the median is printed")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(not 1 <= n <= 500 for n in sizes) or args.repeat < 1:
        raise SystemExit("tree sizes must be 1..500 and --repeat at least 1")
    become_subreaper()
    print_times(sizes, args.repeat)
    print_sizes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
