"""Test support for the restore tests: a target dumped, restored in this process, always killed and reaped.

Why restored in-process: the restored process is then a child of the test
process, so the test can reap it (a killed process keeps its PID until
reaped, and the next restore needs that PID again).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dump_support import Target, start_target
from runtime import dump, restore


REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """`python -m runtime ARGS` from the repository, output captured as text, stdin /dev/null by default."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def dumped_sleep(images: Path, cwd: Path | None = None) -> int:
    """Dump (and so kill) a `sleep 1000` into images with the CLI; reaped here. Returns its PID."""
    target = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    try:
        wait_for(lambda: open(f"/proc/{target.pid}/stat").read().split()[2] == "S", what="sleep to sleep")
        done = run_cli("dump", "-t", str(target.pid), "-D", str(images))
        assert done.returncode == 0, done.stderr
    finally:
        if target.poll() is None:
            target.kill()
        target.wait()
    return target.pid


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Restorable:
    """A started target that can be dumped and restored; stop() kills and reaps whatever runs."""

    def __init__(self, argv: list[str], workdir: Path, ready: bool = True):
        self.workdir = workdir
        self.images = workdir / "images"
        if ready:
            self.target = start_target(argv, workdir)
        else:
            self.target = _start_plain(argv, workdir)
        self.pid = self.target.pid
        self.restored = False

    @property
    def out(self) -> Path:
        return self.target.out

    def dump(self, leave_running: bool = False) -> None:
        dump.dump(self.pid, self.images, dump.DumpOptions(leave_running=leave_running))
        if not leave_running:
            self.target.proc.wait()  # killed by the dump: reap it so its PID is free again
            # The PID also names the target's session and process group: a child it left
            # behind (bash's `sleep`) keeps it taken until that child is gone too.
            wait_for(lambda: not _group_members(self.pid), what=f"process group {self.pid} to empty")

    def restore(self) -> None:
        assert restore.restore(str(self.images), detach=True) == 0
        self.restored = True

    def kill_restored(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.restored = False

    def stop(self) -> None:
        if self.restored:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                self.kill_restored()
        self.target.stop()


def _group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        members.append(int(name))
    return members


def _start_plain(argv: list[str], workdir: Path) -> Target:
    out = workdir / "out.txt"
    with open(out, "w") as stdout, open(os.devnull) as stdin:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT, cwd=workdir,
                                start_new_session=True)
    return Target(proc, out)


def lines(path: Path, tag: str) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.startswith(tag + " ")]
