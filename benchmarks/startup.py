"""Wall time of the smallest commands: Python's own start-up, `--version`, and dump and restore of `sleep 1000`.

Why apart from dump_restore.py: for a tiny process nearly all of a command's
time is start-up (the interpreter, the imports) and fixed costs of each step,
not page data; issue 18 asks for <= 60 ms each. Each figure is the median of
--repeat runs, measured side by side in one run (the machine is noisy):
  python -c pass          the interpreter with the venv's site (.pth files)
  python -I -S -c pass    the bare interpreter: the floor under everything
  python -m runtime --version   start-up plus the command line's own imports
  dump / restore sleep    the real command line on a `sleep 1000`, images in /dev/shm
Bytecode is cached as an installed runtime has it: PYTHONDONTWRITEBYTECODE is
dropped for the commands and one warm-up round runs first (without cached
bytecode every command compiles its modules again, hundreds of ms).
Prints figures; asserts nothing but that every restored sleep runs on.

usage: python benchmarks/startup.py [--repeat 5]
"""

import argparse
import os
import statistics
import sys

from measure import bench_sleep, runtime, timed
from runtime.kernel.clone import become_subreaper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is printed")
    args = parser.parse_args()
    become_subreaper()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    bench_sleep()
    rows: dict[str, list[float]] = {"python -I -S -c pass": [], "python -c pass": [],
                                    "python -m runtime --version": [], "dump sleep 1000": [],
                                    "restore sleep 1000": []}
    for _ in range(args.repeat):
        rows["python -I -S -c pass"].append(timed([sys.executable, "-I", "-S", "-c", "pass"])[0])
        rows["python -c pass"].append(timed([sys.executable, "-c", "pass"])[0])
        rows["python -m runtime --version"].append(runtime("--version")[0])
        dump_s, restore_s = bench_sleep()
        rows["dump sleep 1000"].append(dump_s)
        rows["restore sleep 1000"].append(restore_s)
    for name, times in rows.items():
        print(f"{name:<30} {statistics.median(times) * 1000:>7.1f} ms  (min {min(times) * 1000:.1f})")
    print(f"medians of {args.repeat}; wall clock of the whole command, python start-up included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
