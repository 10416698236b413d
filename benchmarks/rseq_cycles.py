"""How many dump cycles catch an rseq target inside its critical section, per case.

Each cycle: dump (which kills), reap, restore. The abort targets run on
after each restore and their own consistency checks are read; the
NO_RESTART targets are restored left stopped under ptrace (on Linux 6.0+
they would be killed if they ran) and killed after the check. Prints one
line per case: cycles, how many were inside (abort / no_restart), outside,
and the median dump and restore times. Figures only; nothing is asserted
beyond the targets' own checks.

    python benchmarks/rseq_cycles.py [--cycles 50]
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dump_support import start_target, target_path  # noqa: E402
from rseq_support import kill_and_reap, start_rseq_target, status_lines, wait_progress, wait_stopped  # noqa: E402
from runtime.dump import dump  # noqa: E402
from runtime.images import loader  # noqa: E402
from runtime.images.model import RseqCase  # noqa: E402
from runtime.restore import restore  # noqa: E402


def cycle_running(target, workdir: Path, cycles: int) -> tuple[Counter, list[float], list[float]]:
    """Dump/restore a target that keeps running; the counter target's checks are read after each restore."""
    cases, dumps, restores = Counter(), [], []
    pid = target.pid
    counting = target.info.get("commits") is not None
    for cycle in range(cycles):
        images = workdir / f"img-{cycle}"
        started = time.perf_counter()
        dump(pid, images)
        dumps.append(time.perf_counter() - started)
        rseq = loader.load(images).root.process.threads[0].rseq
        cases[rseq.case if rseq else None] += 1
        committed = status_lines(target)[-1]["commits"] if counting and status_lines(target) else 0
        started = time.perf_counter()
        restore(str(images), detach=True)
        restores.append(time.perf_counter() - started)
        if counting:
            wait_progress(target, committed)
        else:
            time.sleep(0.02)
    kill_and_reap(pid)
    return cases, dumps, restores


def cycle_stopped(flag_in: str, workdir: Path, cycles: int) -> tuple[Counter, list[float], list[float]]:
    """The NO_RESTART target, restarted fresh for each cycle (it cannot run on after a restore here)."""
    cases, dumps, restores = Counter(), [], []
    for cycle in range(cycles):
        target = start_rseq_target("rseq_stop", [flag_in], workdir)
        try:
            wait_stopped(target.pid)
            images = workdir / f"stop-{flag_in}-{cycle}"
            started = time.perf_counter()
            dump(target.pid, images)
            dumps.append(time.perf_counter() - started)
            cases[loader.load(images).root.process.threads[0].rseq.case] += 1
            started = time.perf_counter()
            restore(str(images), detach=True, leave_traced=True)
            restores.append(time.perf_counter() - started)
        finally:
            target.stop()
            kill_and_reap(target.pid)
    return cases, dumps, restores


def report(name: str, cycles: int, cases: Counter, dumps: list[float], restores: list[float]) -> None:
    inside = cases[RseqCase.ABORT] + cases[RseqCase.NO_RESTART]
    print(f"{name:34} {cycles:6} {inside:6} {cases[RseqCase.ABORT]:6} {cases[RseqCase.NO_RESTART]:10} "
          f"{cases[RseqCase.OUTSIDE] + cases[None]:7} {statistics.median(dumps) * 1e3:9.1f} "
          f"{statistics.median(restores) * 1e3:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the per-restore NO_RESTART warning would drown the table
    print(f"{'case':34} {'cycles':>6} {'inside':>6} {'abort':>6} {'no_restart':>10} {'outside':>7} "
          f"{'dump ms':>9} {'restore ms':>11}")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        workdir = Path(tmp)
        for spins in ("1000000", "10000", "1000"):
            target = start_rseq_target("rseq_counter", [spins], workdir)
            try:
                time.sleep(0.05)
                report(f"rseq_counter spins={spins}", args.cycles, *cycle_running(target, workdir, args.cycles))
            finally:
                target.stop()
        glibc = start_target([str(target_path("rseq_getcpu"))], workdir)
        try:
            report("rseq_getcpu (glibc area)", args.cycles, *cycle_running(glibc, workdir, args.cycles))
        finally:
            glibc.stop()
        stop_cycles = max(1, args.cycles // 10)
        for flag_in in ("cs", "area"):
            report(f"rseq_stop NO_RESTART in {flag_in}", stop_cycles, *cycle_stopped(flag_in, workdir, stop_cycles))


if __name__ == "__main__":
    main()
