"""Test support for the rseq tests: the rseq targets, started without glibc's own rseq area.

Why: the targets register their own area with their own signature, which
the kernel allows only if glibc has not registered one already; the
tunable turns glibc's registration off for the target only.
"""

import contextlib
import os
import signal
import time
from pathlib import Path

from dump_support import Target, start_target, target_path
from runtime.kernel.procfs.status import read_status

NO_GLIBC_RSEQ = "glibc.pthread.rseq=0"


def start_rseq_target(name: str, args: list[str], workdir: Path) -> Target:
    """Start a target from build/targets with glibc's rseq registration off (for it only)."""
    previous = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = NO_GLIBC_RSEQ
    try:
        return start_target([str(target_path(name)), *args], workdir)
    finally:
        if previous is None:
            del os.environ["GLIBC_TUNABLES"]
        else:
            os.environ["GLIBC_TUNABLES"] = previous


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until the process is in a group stop (state T)."""
    deadline = time.monotonic() + timeout
    while read_status(pid).state != "T":
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} did not stop")
        time.sleep(0.005)


def status_lines(target: Target) -> list[dict[str, int]]:
    """The counter target's "status k=v ..." lines; fails the test on any VIOLATION line."""
    text = target.out.read_text()
    assert "VIOLATION" not in text, text[-2000:]
    return [{k: int(v) for k, v in (w.split("=") for w in line.split()[1:])}
            for line in text.splitlines() if line.startswith("status ")]


def wait_progress(target: Target, after: int, timeout: float = 5.0) -> dict[str, int]:
    """Until the counter target reports more than `after` commits (and no violation); its last status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = status_lines(target)
        if lines and lines[-1]["commits"] > after:
            return lines[-1]
        time.sleep(0.02)
    raise TimeoutError(f"pid {target.pid}: no progress past {after} commits: {target.out.read_text()[-500:]!r}")


def kill_and_reap(pid: int) -> None:
    """SIGKILL pid (a child of the test, e.g. a restored process) and reap it, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
