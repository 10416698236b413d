"""Test support for the dump tests: starting C targets and always reaping them.

Why a module of its own: every dump test starts a real process that must be
killed and reaped whatever happens (also when the test fails), must have
stdio the dump accepts (regular files, not the pytest pipes) and must say
when it has set its state up; the targets print one "ready key=value ..."
line for that.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "build" / "targets"


def target_path(name: str) -> Path:
    """A compiled target; conftest's session fixture has run `scons targets` before any test."""
    path = TARGETS / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: not built (tests/targets/{name}.c, `scons targets`)")
    return path


@dataclass
class Target:
    """A running target process; `info` holds the key=value pairs of its ready line."""

    proc: subprocess.Popen
    out: Path
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def addr(self, key: str) -> int:
        return int(self.info[key], 16)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_target(argv: list[str], workdir: Path, timeout: float = 10.0) -> Target:
    """Start argv with stdin /dev/null and stdout/stderr a file; wait for its ready line."""
    out = workdir / f"out-{len(list(workdir.glob('out-*')))}.txt"
    with open(out, "w") as stdout, open(os.devnull) as stdin:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    target = Target(proc, out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("ready"):
                target.info = dict(word.split("=", 1) for word in line.split()[1:])
                return target
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    target.stop()
    raise RuntimeError(f"{argv[0]} did not get ready: {out.read_text()!r}")
