"""What the benchmarks share: timing a command with its peak RSS, waiting for a target's line, reaping.

Why a module: every benchmark measures the real command line the same way,
so their figures compare; the scripts import it from their own folder.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")


def measured(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read().decode().strip()}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def timed(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, which must succeed."""
    elapsed, _, maxrss = measured(command)
    return elapsed, maxrss


def runtime(*args: str) -> tuple[float, int]:
    return timed([sys.executable, "-m", "runtime", *args])


def wait_for_line(path: Path, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(needle):
                return line
        time.sleep(0.02)
    raise SystemExit(f"target never printed {needle!r}")


def kill_and_reap(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _runtime_seconds(*args: str) -> float:
    return runtime(*args)[0]


def bench_sleep(measure: Callable[..., object] = _runtime_seconds) -> tuple:
    """Dump and restore wall seconds of a `sleep 1000`, the smallest process there is: the reference.

    measure(*args) runs `python -m runtime ARGS` and says what each figure is (default: wall seconds).
    """
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    try:
        target = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.1)
        dump_s = measure("dump", "-t", str(target.pid), "-D", str(work / "images"))
        target.wait()
        restore_s = measure("restore", "-D", str(work / "images"), "-d")
        if Path(f"/proc/{target.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            raise SystemExit("restored sleep is not running")
        kill_and_reap(target.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dump_s, restore_s
