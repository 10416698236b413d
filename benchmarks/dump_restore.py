"""Dump and restore wall time and peak RSS, against the floor of writing the same bytes.

Each size runs the patterned C target (tests/targets/restore_state MIB),
dumps it with the real command line into /dev/shm, restores it, and has the
restored target verify its pattern. In the same run `dd` writes the same
number of bytes to /dev/shm: memory bandwidth here is noisy, so only figures
measured side by side compare. Also `sleep 1000`. Prints figures; asserts
nothing but that the restored process really continued.

usage: python benchmarks/dump_restore.py [--sizes 64,512,2048]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import REPO, SHM, bench_sleep, kill_and_reap, runtime, timed, wait_for_line
from runtime.kernel.clone import become_subreaper

TARGET = REPO / "build" / "targets" / "restore_state"


def dd_floor(mib: int) -> float:
    out = SHM / "revive-bench-dd"
    try:
        elapsed, _ = timed(["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={mib}", "status=none"])
    finally:
        out.unlink(missing_ok=True)
    return elapsed


def bench_patterned(mib: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    images = work / "images"
    try:
        log = work / "out.log"
        with open(log, "w") as out:
            target = subprocess.Popen([str(TARGET), str(mib)], cwd=work, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out, start_new_session=True)
        wait_for_line(log, "ready")
        dump_s, dump_rss = runtime("dump", "-t", str(target.pid), "-D", str(images))
        target.wait()
        restore_s, restore_rss = runtime("restore", "-D", str(images), "-d")
        (work / "verify").touch()
        verdict = wait_for_line(log, "verify")
        kill_and_reap(target.pid)
        if not verdict.startswith("verify ok"):
            raise SystemExit(f"{mib} MiB: restored target says {verdict!r}")
        image_bytes = sum(f.stat().st_size for f in images.iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"dump": dump_s, "restore": restore_s, "dump_rss": dump_rss, "restore_rss": restore_rss,
            "dd": dd_floor(mib), "image": image_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,512,2048", help="MiB of patterned memory, comma separated")
    args = parser.parse_args()
    if not TARGET.exists():
        raise SystemExit(f"{TARGET} is missing: run `scons targets`")
    become_subreaper()
    print(f"{'MiB':>6} {'image MiB':>10} {'dump s':>8} {'restore s':>10} {'dd s':>7} "
          f"{'dump MB/s':>10} {'dd MB/s':>8} {'dump RSS MiB':>13} {'restore RSS MiB':>16}")
    for mib in (int(s) for s in args.sizes.split(",")):
        r = bench_patterned(mib)
        print(f"{mib:>6} {r['image'] / 2**20:>10.0f} {r['dump']:>8.3f} {r['restore']:>10.3f} {r['dd']:>7.3f} "
              f"{mib * 1.048576 / r['dump']:>10.0f} {mib * 1.048576 / r['dd']:>8.0f} "
              f"{r['dump_rss'] / 1024:>13.1f} {r['restore_rss'] / 1024:>16.1f}")
    dump_s, restore_s = bench_sleep()
    print(f"sleep 1000: dump {dump_s:.3f} s, restore {restore_s:.3f} s")
    print("times are wall clock of the whole command (python start-up included); RSS is the runtime's own peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
