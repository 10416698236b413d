"""Time to write an ELF core file from an image, against the floor of writing the same bytes.

The patterned C target (tests/targets/restore_state MIB) is dumped with
--leave-running into /dev/shm, then `python -m runtime core` writes its core
file there too; in the same run `dd` writes as many bytes as the core holds
to /dev/shm (memory bandwidth here is noisy: only figures measured side by
side compare). Medians of --repeat runs. Prints figures; asserts nothing
but that the core file holds at least the pattern's size.

usage: python benchmarks/core.py [--sizes 64,1024] [--repeat 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from measure import REPO, SHM, kill_and_reap, runtime, timed, wait_for_line
from runtime.kernel.clone import become_subreaper

TARGET = REPO / "build" / "targets" / "restore_state"


def bench_once(mib: int) -> tuple[float, float, int]:
    """(core seconds, dd seconds for the same bytes, core bytes on disk)."""
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    try:
        log = work / "out.log"
        with open(log, "w") as out:
            target = subprocess.Popen([str(TARGET), str(mib)], cwd=work, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out, start_new_session=True)
        try:
            wait_for_line(log, "ready")
            runtime("dump", "-t", str(target.pid), "-D", str(work / "images"), "--leave-running")
        finally:
            kill_and_reap(target.pid)
        core_s, _ = runtime("core", "-D", str(work / "images"), "-o", str(work / "core"))
        written = os.stat(work / "core").st_blocks * 512
        if written < mib << 20:
            raise SystemExit(f"{mib} MiB: the core holds only {written} bytes")
        (work / "core").unlink()
        dd_s, _ = timed(["dd", "if=/dev/zero", f"of={work / 'dd'}", "bs=1M", f"count={written >> 20}",
                         "status=none"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return core_s, dd_s, written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,1024", help="MiB of patterned memory, comma separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    become_subreaper()
    print(f"{'MiB':>6} {'core s':>8} {'dd s':>8} {'ratio':>6} {'core MiB on disk':>17}")
    for mib in (int(size) for size in args.sizes.split(",")):
        runs = [bench_once(mib) for _ in range(args.repeat)]
        core_s, dd_s = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{mib:6d} {core_s:8.3f} {dd_s:8.3f} {core_s / dd_s:6.2f} {runs[0][2] / (1 << 20):17.1f}")
    print(f"medians of {args.repeat}; /dev/shm; dd writes as many bytes as the core holds, in the same run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
