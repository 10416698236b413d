"""Figures for the vDSO proxy: restore time remap vs proxy, and the cost of one proxied call.

Restore time: the vdso_calls target is dumped once; the same image is
restored 10 times with --vdso=remap and 10 times with --vdso=proxy (median,
wall time of runtime.restore.restore with detach, the restored process killed
and reaped between runs). Call cost: inside a target restored with the
proxy, 200000 clock_gettime(CLOCK_MONOTONIC) calls through the pointer it
resolved before the dump (old vDSO -> jump -> running vDSO) against as many
through a pointer into the running [vdso] (SIGUSR2, see tests/targets/vdso_calls.c).

Run: python3 benchmarks/vdso.py (as root, after `scons blobs targets`).
"""

import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dump_support import start_target, target_path  # noqa: E402
from runtime import dump, restore  # noqa: E402
from runtime.mm.vdso import VdsoMode  # noqa: E402

RUNS = 10


def kill_restored(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def time_restores(images: Path, pid: int, mode: VdsoMode) -> list[float]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        restore.restore(str(images), detach=True, vdso_mode=mode)
        times.append(time.perf_counter() - start)
        kill_restored(pid)
    return times


def bench_line(out: Path, before: int, timeout: float = 10.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in out.read_text().splitlines() if line.startswith("bench ")]
        if len(lines) > before:
            return dict(word.split("=", 1) for word in lines[before].split()[1:])
        time.sleep(0.01)
    raise RuntimeError(f"no bench line: {out.read_text()!r}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        target = start_target([str(target_path("vdso_calls"))], work)
        images = work / "images"
        dump.dump(target.pid, images)
        target.proc.wait()
        results = {mode: time_restores(images, target.pid, mode) for mode in (VdsoMode.REMAP, VdsoMode.PROXY)}
        for mode, times in results.items():
            print(f"restore --vdso={mode.value}: median {statistics.median(times) * 1000:.2f} ms "
                  f"(min {min(times) * 1000:.2f}, max {max(times) * 1000:.2f}, n={RUNS})")
        restore.restore(str(images), detach=True, vdso_mode=VdsoMode.PROXY)
        try:
            os.kill(target.pid, signal.SIGUSR2)
            line = bench_line(target.out, 0)
        finally:
            kill_restored(target.pid)
        proxied, direct = int(line["proxied_ps"]) / 1000, int(line["direct_ps"]) / 1000
        print(f"clock_gettime through the proxy: {proxied:.1f} ns/call, direct: {direct:.1f} ns/call "
              f"({line['calls']} calls each, inside the restored target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
