"""`restore --shell-job` from a terminal and from a pipe: the restored job reads and writes the caller's stdio.

Why these two: they are a shell's normal case, and the one the first
shell-job test (stdin from /dev/null) could not see: with fd 0 inherited,
the restoring child once called closerange(0, 0), which Python turns into
close_range(0, ~0), closing the error pipe and every helper descriptor.
Each test dumps a real program whose stdin and stdout are a terminal or
pipes, restores it through the command line onto fresh ones, and talks to
it there: a line written to the new stdin comes back reversed on the new
stdout.
"""

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from restore_support import wait_for

REPO = Path(__file__).resolve().parent.parent
REVERSER = "import sys\nfor line in sys.stdin:\n    print(line.strip()[::-1], flush=True)\n"


def runtime(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def blocked_reading(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def dump_shell_job(target: subprocess.Popen, images: Path) -> None:
    wait_for(lambda: blocked_reading(target.pid), what="the reverser to wait for input")
    dumped = runtime("dump", "-t", str(target.pid), "-D", str(images), "--shell-job")
    assert dumped.returncode == 0, dumped.stderr
    assert target.wait(timeout=10) == -signal.SIGKILL


def stop_restored(pid: int, cli: subprocess.Popen) -> None:
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)
    cli.wait(timeout=10)


def read_until(fd: int, wanted: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"no {wanted!r} within {timeout} s, got {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: a terminal whose every other end is closed
            chunk = b""
        if not chunk:
            raise AssertionError(f"end of output before {wanted!r}, got {data!r}")
        data += chunk
    return data


def test_shell_job_restores_onto_a_pipe_on_stdin_and_stdout(tmp_path):
    images = tmp_path / "images"
    target = subprocess.Popen([sys.executable, "-c", REVERSER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        target.stdin.write(b"abc\n")
        target.stdin.flush()
        assert target.stdout.readline() == b"cba\n"
        dump_shell_job(target, images)
    finally:
        if target.poll() is None:
            target.kill()
        target.wait()
        target.stdin.close()
        target.stdout.close()

    cli = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(images), "--shell-job"],
                           cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        cli.stdin.write(b"restored\n")
        cli.stdin.flush()
        assert read_until(cli.stdout.fileno(), b"derotser\n") == b"derotser\n"
        assert os.readlink(f"/proc/{target.pid}/fd/0") == os.readlink(f"/proc/{cli.pid}/fd/0")
    finally:
        stop_restored(target.pid, cli)
        cli.stdin.close()
        cli.stdout.close()


def test_shell_job_restores_onto_the_callers_terminal(tmp_path):
    images = tmp_path / "images"
    master, slave = pty.openpty()
    target = subprocess.Popen([sys.executable, "-c", REVERSER], stdin=slave, stdout=slave, stderr=slave,
                              start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"abc\n")
        read_until(master, b"cba")
        dump_shell_job(target, images)
    finally:
        if target.poll() is None:
            target.kill()
        target.wait()
        os.close(master)

    master, slave = pty.openpty()
    cli = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(images), "--shell-job"],
                           cwd=REPO, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        wait_for(lambda: os.path.exists(f"/proc/{target.pid}"), what="the restored reverser")
        os.write(master, b"terminal\n")
        read_until(master, b"lanimret")
        assert os.readlink(f"/proc/{target.pid}/fd/1") == os.readlink(f"/proc/{cli.pid}/fd/1")
        assert os.readlink(f"/proc/{target.pid}/fd/1").startswith("/dev/pts/")
    finally:
        stop_restored(target.pid, cli)
        os.close(master)
