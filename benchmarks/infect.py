"""Figures for the parasite injection: infection round trip, DUMP_PAGES throughput and peak RSS.

- seize + infect + NOOP + cure of a small target: median and p95 over 100 runs;
- DUMP_PAGES of 64 MiB and 1 GiB of present pages into a file on /dev/shm:
  MB/s (median of 3; the first write of a tmpfs file also pays for its page
  allocation, so the runs are listed), and the peak RSS (ru_maxrss) of the runtime process doing it, next
  to the RSS of a runtime process that only imports and infects, so the
  difference shows that page data does not pass through Python.
Prints one line per figure; nothing is asserted.
"""

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dump_support import start_target, target_path  # noqa: E402
from runtime.infect.seize import seize  # noqa: E402
from runtime.infect.session import infect  # noqa: E402

RUNS = 100
DUMP_RUNS = 3

# Run in a child so its ru_maxrss is the runtime's alone. argv: pid base size out (size 0: no dump).
DUMPER = """
import os, sys, time
from runtime.infect.parasite import Iovec
from runtime.infect.session import infect
pid, base, size = (int(a, 0) for a in sys.argv[1:4])
fd = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with infect(pid) as parasite:
    start = time.perf_counter()
    written = parasite.dump_pages([Iovec(base, size)], fd) if size else 0
    elapsed = time.perf_counter() - start
os.close(fd)
print(written, elapsed)
"""


def infection_round_trips(pid: int) -> list[float]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        with seize(pid) as seized, infect(seized) as parasite:
            parasite.noop()
        times.append(time.perf_counter() - start)
    return times


def dump_in_child(pid: int, base: int, size: int, out: str) -> tuple[int, float, int]:
    child = subprocess.Popen([sys.executable, "-c", DUMPER, str(pid), hex(base), str(size), out], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"dumper failed with status {child.returncode}")
    written, elapsed = output.split()
    return int(written), float(elapsed), usage.ru_maxrss


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="revive-bench-") as tmp:
        work = pathlib.Path(tmp)
        small = start_target([str(target_path("infect_state")), str(work / "file"), "1"], work)
        try:
            times = sorted(infection_round_trips(small.pid))
            p95 = times[int(len(times) * 0.95) - 1]
            print(f"seize+infect+NOOP+cure, {RUNS} runs: median {statistics.median(times) * 1e3:.2f} ms,"
                  f" p95 {p95 * 1e3:.2f} ms")
        finally:
            small.stop()
        for mib in (64, 1024):
            target = start_target([str(target_path("infect_state")), str(work / "file"), str(mib)], work,
                                  timeout=120)
            out = f"/dev/shm/revive-bench-pages-{os.getpid()}.img"
            try:
                _, _, idle_rss = dump_in_child(target.pid, target.addr("pages"), 0, out)
                runs = [dump_in_child(target.pid, target.addr("pages"), mib << 20, out) for _ in range(DUMP_RUNS)]
                elapsed = statistics.median(run[1] for run in runs)
                rss = max(run[2] for run in runs)
                print(f"DUMP_PAGES {mib} MiB -> /dev/shm, median of {DUMP_RUNS}: {(mib << 20) / elapsed / 1e6:.0f} MB/s"
                      f" ({elapsed:.3f} s; runs {', '.join(f'{run[1]:.3f}' for run in runs)} s),"
                      f" runtime peak RSS {rss / 1024:.1f} MiB (infect without dump: {idle_rss / 1024:.1f} MiB)")
            finally:
                target.stop()
                if os.path.exists(out):
                    os.unlink(out)


if __name__ == "__main__":
    main()
