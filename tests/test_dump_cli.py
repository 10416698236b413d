"""`python -m runtime dump`: exit status, killing by default, one-line errors, logging."""

import signal
import subprocess
import sys

import pytest

from dump_support import ROOT, start_target, target_path
from runtime.images.loader import load
from runtime.kernel.procfs.status import read_status


def run_dump(*args):
    return subprocess.run([sys.executable, "-m", "runtime", "dump", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_dump_kills_the_target_after_a_successful_dump(pages_target, tmp_path):
    result = run_dump("-t", pages_target.pid, "-D", tmp_path / "img")
    assert (result.returncode, result.stderr) == (0, "")
    assert pages_target.proc.wait(timeout=10) == -signal.SIGKILL
    assert load(tmp_path / "img").root.process.pid == pages_target.pid


def test_dump_leave_running_with_log_file(pages_target, tmp_path):
    log = tmp_path / "dump.log"
    result = run_dump("-t", pages_target.pid, "-D", tmp_path / "img", "--leave-running", "-v", "-o", log)
    assert (result.returncode, result.stderr) == (0, "")
    assert pages_target.alive() and read_status(pages_target.pid).tracer_pid == 0
    text = log.read_text()
    assert f"dumping pid {pages_target.pid}" in text and "left running" in text


def test_dump_refusal_is_one_line_and_exit_status_1(tmp_path):
    target = start_target([str(target_path("dump_refused")), "socket"], tmp_path)
    try:
        result = run_dump("-t", target.pid, "-D", tmp_path / "img")
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"revive: pid {target.pid}: fd 3 (socket ")
        assert target.alive() and read_status(target.pid).tracer_pid == 0
    finally:
        target.stop()


def test_dump_of_a_missing_process_fails_with_status_1(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    result = run_dump("-t", dead.pid, "-D", tmp_path / "img")
    assert result.returncode == 1 and f"pid {dead.pid}" in result.stderr
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("args", [[], ["-t", "1"], ["-D", "x"], ["-t", "abc", "-D", "x"]])
def test_dump_bad_usage_exits_2(args):
    assert run_dump(*args).returncode == 2
