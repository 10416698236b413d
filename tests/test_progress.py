"""The progress bar: pages and throughput on a real terminal (a pty) for dump and restore, nothing elsewhere."""

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dump_support import start_target, target_path
from restore_support import wait_for
from runtime import progress
from runtime.kernel.procfs.io import bytes_read

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BIG_MIB = "256"
RESTORE_MIB = "512"  # eight of the restorer's 64 MiB reads: the bar is seen between them


class Terminal:
    """A command on a fresh pty (stdin, stdout and stderr); everything it draws is collected."""

    def __init__(self, argv: list[str], delay: str | None):
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
        env.pop(progress.DELAY_ENV, None)
        if delay is not None:
            env[progress.DELAY_ENV] = delay
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read_until(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or not self._read_some():
                raise AssertionError(f"{needle!r} never appeared on the terminal: {self.text!r}")

    def finish(self, timeout: float = 60.0) -> int:
        """Read to the end (the pty reports EIO once the command and its children closed it); the exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read_some():
            pass
        status = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        os.close(self.master)
        return status

    def _read_some(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.raw += data
        return bool(data)


def runtime_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def dumped_pages(images: Path, pid: int) -> int:
    return (images / f"pages-{pid}.img").stat().st_size // os.sysconf("SC_PAGE_SIZE")


def patterned_target(tmp_path, mib: str):
    """restore_state with MIB MiB of patterned memory; killed and reaped afterwards, also if restored."""
    target = start_target([str(target_path("restore_state")), mib], tmp_path)
    yield target
    target.stop()


@pytest.fixture
def big_target(tmp_path):
    yield from patterned_target(tmp_path, BIG_MIB)


@pytest.fixture
def restore_target(tmp_path):
    yield from patterned_target(tmp_path, RESTORE_MIB)


def test_dump_on_a_terminal_shows_pages_done_and_throughput(big_target, tmp_path):
    images = tmp_path / "images"
    terminal = Terminal(runtime_argv("dump", "-t", str(big_target.pid), "-D", str(images)), delay="0")
    assert terminal.finish() == 0, terminal.text
    pages = dumped_pages(images, big_target.pid)
    assert pages > 65536
    assert re.search(rf"dump .* {pages}/{pages} pages 256\.\d/256\.\d MiB [\d.]+ [kMG]?B/s", terminal.text), \
        terminal.text


def test_dump_with_stderr_not_a_terminal_prints_nothing_extra(big_target, tmp_path):
    env = {**os.environ, progress.DELAY_ENV: "0"}
    done = subprocess.run(runtime_argv("dump", "-t", str(big_target.pid), "-D", str(tmp_path / "images")),
                          cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_a_short_dump_on_a_terminal_prints_nothing(tmp_path):
    target = start_target([str(target_path("restore_state"))], tmp_path)
    try:
        terminal = Terminal(runtime_argv("dump", "-t", str(target.pid), "-D", str(tmp_path / "images")), delay=None)
        assert terminal.finish() == 0, terminal.text
        assert terminal.raw == b""
    finally:
        target.stop()


def test_restore_on_a_terminal_shows_the_page_fill_as_it_goes(restore_target, tmp_path):
    images = tmp_path / "images"
    big_target = restore_target
    dumped = subprocess.run(runtime_argv("dump", "-t", str(big_target.pid), "-D", str(images)), cwd=REPO,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0, dumped.stderr
    big_target.proc.wait()
    pages = dumped_pages(images, big_target.pid)
    terminal = Terminal(runtime_argv("restore", "-D", str(images)), delay="0")
    try:
        terminal.read_until(f"{pages}/{pages} pages")
        ticks = len(big_target.out.read_text().splitlines())
        wait_for(lambda: len(big_target.out.read_text().splitlines()) > ticks, what="the restored target to tick")
    finally:
        if terminal.proc.poll() is None:
            os.kill(big_target.pid, signal.SIGKILL)  # restore waits for it: its exit ends the command
        status = terminal.finish()
    assert status == 128 + signal.SIGKILL
    assert re.search(rf"restore .* {pages}/{pages} pages 512\.\d/512\.\d MiB", terminal.text), terminal.text
    seen = {int(done) for done in re.findall(rf"restore [^\r]*? (\d+)/{pages} pages", terminal.text)}
    assert seen & set(range(1, pages)), f"no figure between 0 and {pages} pages: {sorted(seen)}"


def test_bytes_read_counts_this_process_reads(tmp_path):
    data = tmp_path / "data"
    data.write_bytes(bytes(1 << 20))
    before = bytes_read(os.getpid())
    with open(data, "rb", buffering=0) as f:
        assert len(f.read()) == 1 << 20
    assert bytes_read(os.getpid()) - before >= 1 << 20
