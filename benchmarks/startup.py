"""Wall time of the smallest commands: Python's own start-up, `--version`, and dump and restore of `sleep 1000`.

Why apart from dump_restore.py: for a tiny process nearly all of a command's
time is start-up (the interpreter, the imports) and fixed costs of each step,
not page data; issue 18 asks for <= 60 ms each. Each figure is the median of
--repeat runs, measured side by side in one run (the machine is noisy):
  python -c pass          the interpreter with the venv's site (.pth files)
  python -I -S -c pass    the bare interpreter: the floor under everything
  stdlib of a dump        python importing only the standard library modules a dump imports
                          (found by importing runtime.dump): the floor under the runtime's own code
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
import subprocess
import sys

from measure import REPO, bench_sleep, measured
from runtime.kernel.clone import become_subreaper


def stdlib_of_a_dump() -> list[str]:
    """The top-level standard library modules `import runtime.cli, runtime.dump` loads (os among them)."""
    listed = subprocess.run([sys.executable, "-c", "import sys, runtime.cli, runtime.dump; print(*sys.modules)"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return sorted({name for name in listed if name in sys.stdlib_module_names and not name.startswith("_")} | {"os"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is printed")
    args = parser.parse_args()
    become_subreaper()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    bench_sleep()
    python = [sys.executable]
    commands = {"python -I -S -c pass": python + ["-I", "-S", "-c", "pass"], "python -c pass": python + ["-c", "pass"],
                "stdlib of a dump": python + ["-c", f"import {', '.join(stdlib_of_a_dump())}; os._exit(0)"],
                "python -m runtime --version": python + ["-m", "runtime", "--version"]}
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in [*commands, "dump sleep 1000",
                                                                        "restore sleep 1000"]}
    for _ in range(args.repeat):
        for name, command in commands.items():
            rows[name].append(measured(command)[:2])
        dump, restore = bench_sleep(lambda *runtime_args: measured(python + ["-m", "runtime", *runtime_args])[:2])
        rows["dump sleep 1000"].append(dump)
        rows["restore sleep 1000"].append(restore)
    print(f"{'':<30} {'wall ms':>8} {'min':>7} {'cpu ms':>7}")
    for name, runs in rows.items():
        walls = [wall for wall, _ in runs]
        print(f"{name:<30} {statistics.median(walls) * 1000:>8.1f} {min(walls) * 1000:>7.1f} "
              f"{statistics.median(cpu for _, cpu in runs) * 1000:>7.1f}")
    print(f"medians of {args.repeat} (and the least wall time); wall clock of the whole command, python start-up "
          "included; cpu: the command's own user + system time (not the target's, nor the machine's other load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
