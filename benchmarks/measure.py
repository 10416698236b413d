"""What the benchmarks share: timing a command with its peak RSS, waiting for a target's line, reaping.

Why a module: every benchmark measures the real command line the same way,
so their figures compare; the scripts import it from their own folder.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read().decode().strip()}")
    return elapsed, usage.ru_maxrss


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
