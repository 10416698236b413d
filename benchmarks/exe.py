"""Executable size against image size (with and without --standalone), and the time from ./FILE to own code.

A python3 program holding MIB of patterned memory (a bytearray of one
non-zero byte: every page present) prints the wall clock (time.time_ns)
every 10 ms; it is dumped into /dev/shm, `python -m runtime exe` writes the
executable there, and the executable is started with the clock read just
before: the resume time is the first printed clock after the resume minus
that (the program sleeps at most 10 ms first, so the figure is at most 10 ms
high). In the same run `restore` of the same image is timed for comparison
(its process runs its own code when the command returns with -d).
Medians of --repeat runs. Prints figures; asserts nothing but that the
executable resumes.

usage: python benchmarks/exe.py [--sizes 64,1024] [--repeat 3]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from measure import SHM, kill_and_reap, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper

PROGRAM = """
import os, sys, time
memory = bytearray(b"\\x5a") * (int(sys.argv[1]) << 20)
started = os.getppid()  # resumed by ./FILE: its parent is pid 1 of its PID namespace
print("ready pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.01)
    if os.getppid() != started:
        print("resumed at", time.time_ns(), flush=True)
        started = os.getppid()
"""


def du(path: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in ([path] if path.is_file() else path.rglob("*")))


def bench_once(mib: int) -> tuple[int, int, float, float, float, int]:
    """(image bytes, executable bytes, exe write seconds, seconds to own code, restore seconds,
    --standalone executable bytes)."""
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    work.chmod(0o755)
    try:
        (work / "program.py").write_text(PROGRAM)
        log = work / "out.log"
        with open(log, "w") as out:
            target = subprocess.Popen(["/usr/bin/python3", str(work / "program.py"), str(mib)], cwd=work,
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        try:
            wait_for_line(log, "ready")
            runtime("dump", "-t", str(target.pid), "-D", str(work / "images"))
        finally:
            target.wait()
        exe = work / "resume"
        write_s, _ = runtime("exe", "-D", str(work / "images"), "-o", str(exe))
        runtime("exe", "-D", str(work / "images"), "-o", str(work / "standalone"), "--standalone")
        standalone = du(work / "standalone")
        resumed_log = work / "resumed.log"
        with open(resumed_log, "w") as out:
            start = time.time_ns()
            run = subprocess.Popen([str(exe)], cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   start_new_session=True)
        try:
            line = wait_for_line(resumed_log, "resumed at")
        finally:
            end_resumed(run)
        own_code_s = (int(line.split()[-1]) - start) / 1e9
        restore_s, _ = runtime("restore", "-D", str(work / "images"), "-d")
        kill_and_reap_restored(target.pid)
        return du(work / "images"), du(exe), write_s, own_code_s, restore_s, standalone
    finally:
        shutil.rmtree(work, ignore_errors=True)


def end_resumed(run: subprocess.Popen) -> None:
    """C1 (P's child, pid 1 of the process's namespace) killed first: the kernel kills the process, C1 reaps it,
    P reaps C1 and dies of the same signal; P killed first would leave C1 to whoever reaps orphans."""
    with contextlib.suppress(OSError):
        for pid in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split():
            os.kill(int(pid), 9)
    try:
        run.wait(timeout=5)
    except subprocess.TimeoutExpired:
        kill_and_reap(run.pid)


def kill_and_reap_restored(pid: int) -> None:
    """The restored process is a child of the runtime, which exited: this process, a subreaper, reaps it."""
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,1024", help="MiB of patterned memory, comma separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    become_subreaper()
    print(f"{'MiB':>6} {'image MiB':>10} {'exe MiB':>8} {'standalone MiB':>15} {'exe write s':>12} "
          f"{'./FILE to own code s':>21} {'restore -d s':>13}")
    for mib in (int(size) for size in args.sizes.split(",")):
        runs = [bench_once(mib) for _ in range(args.repeat)]
        image, exe, standalone = (runs[0][i] / (1 << 20) for i in (0, 1, 5))
        write_s, own_s, restore_s = (statistics.median(r[i] for r in runs) for i in (2, 3, 4))
        print(f"{mib:6d} {image:10.1f} {exe:8.1f} {standalone:15.1f} {write_s:12.3f} {own_s:21.3f} "
              f"{restore_s:13.3f}")
    print(f"medians of {args.repeat}; /dev/shm; sizes on disk; the resume time is at most 10 ms high "
          "(the program's sleep); /usr/bin/python3 target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
