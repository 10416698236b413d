"""Dump and restore wall time and peak RSS by thread count, against a 1-thread floor.

Each size runs the C target build/targets/threads_many N, whose thread i
increments the uint64 counters[i] every 100 ms; it is dumped with the real
command line into /dev/shm (which kills it), restored detached, and every one
of the N counters must then move within ~0.3 s, read through /proc/PID/mem.
The floor is the same commands on a 1-thread process in the same run: machine
load here is noisy, so only figures measured side by side compare. Each figure
is the median of --repeat runs. Also `sleep 1000` for reference. Prints
figures; asserts nothing but that every restored thread really continued.

usage: python benchmarks/threads.py [--threads 1,8,64,1000] [--repeat 3]
"""

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import REPO, SHM, bench_sleep, kill_and_reap, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper
from runtime.kernel.procfs.mem import read_memory

TARGET = REPO / "build" / "targets" / "threads_many"
FLOOR_THREADS = 1
# Counters tick every 100 ms: 0.3 s gives each thread three chances to show it runs.
CONTINUE_WINDOW_S = 0.3


def parse_ready(line: str) -> dict[str, str]:
    """The key=value fields of "ready pid=P counters=ADDR threads=N"."""
    return dict(word.split("=", 1) for word in line.split()[1:])


def read_counters(pid: int, addr: int, n: int) -> tuple[int, ...]:
    return struct.unpack(f"{n}Q", read_memory(pid, addr, 8 * n))


def check_threads_continue(pid: int, addr: int, n: int) -> None:
    """Exit naming the first thread whose counter did not move within the window."""
    before = read_counters(pid, addr, n)
    time.sleep(CONTINUE_WINDOW_S)
    after = read_counters(pid, addr, n)
    stuck = [i for i in range(n) if after[i] <= before[i]]
    if stuck:
        raise SystemExit(f"{n} threads: thread {stuck[0]} (counters[{stuck[0]}] = {after[stuck[0]]}) did not "
                         f"count on in {CONTINUE_WINDOW_S} s after the restore; {len(stuck)} stuck in all")
    tasks = len(os.listdir(f"/proc/{pid}/task"))
    if tasks != n:
        raise SystemExit(f"{n} threads: the restored process has {tasks} threads")


def bench_once(n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-threads-", dir=SHM))
    images = work / "images"
    running = None  # the PID to kill if we leave early
    try:
        log = work / "out.log"
        with open(log, "w") as out:
            target = subprocess.Popen([str(TARGET), str(n)], cwd=work, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out, start_new_session=True)
        running = target.pid
        ready = parse_ready(wait_for_line(log, "ready"))
        if int(ready["threads"]) != n or int(ready["pid"]) != target.pid:
            raise SystemExit(f"{n} threads: target says {ready}")
        addr = int(ready["counters"], 16)
        dump_s, dump_rss = runtime("dump", "-t", str(target.pid), "-D", str(images))
        target.wait()
        running = None
        restore_s, restore_rss = runtime("restore", "-D", str(images), "-d")
        # Restored with its old PID; as subreaper we reap it again.
        running = target.pid
        check_threads_continue(running, addr, n)
        kill_and_reap(running)
        running = None
    finally:
        if running is not None:
            kill_and_reap(running)
        shutil.rmtree(work, ignore_errors=True)
    return {"dump": dump_s, "restore": restore_s, "dump_rss": dump_rss, "restore_rss": restore_rss}


def bench(n: int, repeat: int) -> dict:
    """Median of each figure over repeat runs of bench_once."""
    runs = [bench_once(n) for _ in range(repeat)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def bench_sleep_median(repeat: int) -> tuple[float, float]:
    runs = [bench_sleep() for _ in range(repeat)]
    return statistics.median(d for d, _ in runs), statistics.median(r for _, r in runs)


def per_thread_ms(t_n: float, t_1: float, n: int) -> str:
    return f"{(t_n - t_1) / (n - 1) * 1000:.3f}" if n > FLOOR_THREADS else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,8,64,1000", help="thread counts (1..1000), comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    args = parser.parse_args()
    if not TARGET.exists():
        raise SystemExit(f"{TARGET} is missing: run `scons targets`")
    sizes = [int(s) for s in args.threads.split(",")]
    if any(not 1 <= n <= 1000 for n in sizes) or args.repeat < 1:
        raise SystemExit("thread counts must be 1..1000 and --repeat at least 1")
    become_subreaper()
    results = {FLOOR_THREADS: bench(FLOOR_THREADS, args.repeat)}
    for n in sizes:
        if n not in results:
            results[n] = bench(n, args.repeat)
    floor = results[FLOOR_THREADS]
    print(f"median of {args.repeat} runs; floor: the same commands on a {FLOOR_THREADS}-thread process")
    print(f"{'threads':>7} {'dump s':>8} {'restore s':>10} {'dump ms/thr':>12} {'restore ms/thr':>15} "
          f"{'dump x1':>8} {'restore x1':>11} {'dump RSS MiB':>13} {'restore RSS MiB':>16}")
    for n in sizes:
        r = results[n]
        print(f"{n:>7} {r['dump']:>8.3f} {r['restore']:>10.3f} "
              f"{per_thread_ms(r['dump'], floor['dump'], n):>12} "
              f"{per_thread_ms(r['restore'], floor['restore'], n):>15} "
              f"{r['dump'] / floor['dump']:>8.2f} {r['restore'] / floor['restore']:>11.2f} "
              f"{r['dump_rss'] / 1024:>13.1f} {r['restore_rss'] / 1024:>16.1f}")
    dump_s, restore_s = bench_sleep_median(args.repeat)
    print(f"sleep 1000: dump {dump_s:.3f} s, restore {restore_s:.3f} s")
    print("times are wall clock of the whole command (python start-up included); RSS is the runtime's own peak; "
          "every restored thread was seen counting on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
