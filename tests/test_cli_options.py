"""Options every command shares: `--version` on each command of both tools, `-j` as criu's short `--shell-job`."""

import importlib.metadata
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blobgen_support import blobgen
from restore_support import run_cli

REPO = Path(__file__).resolve().parent.parent
VERSION_LINE = f"revive {importlib.metadata.version('revive')}\n"
PYTHON_LOOP = "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n"


def test_version_comes_from_the_package_metadata():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{importlib.metadata.version("revive")}"' in pyproject


@pytest.mark.parametrize("command", [(), ("dump",), ("restore",), ("show",), ("check",), ("parasite",)])
def test_runtime_version_on_every_command(command):
    done = run_cli(*command, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_LINE, "")


@pytest.mark.parametrize("command", [(), ("build",), ("inspect",), ("protocol",)])
def test_blobgen_version_on_every_command(command):
    done = blobgen(*command, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_LINE, "")


def test_j_is_shell_job_for_dump_and_restore(tmp_path):
    images = tmp_path / "images"
    target = subprocess.Popen([sys.executable, "-c", PYTHON_LOOP], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        target.stdout.readline()
        refused = run_cli("dump", "-t", str(target.pid), "-D", str(images))
        assert refused.returncode == 1 and "--shell-job" in refused.stderr
        dumped = run_cli("dump", "-t", str(target.pid), "-D", str(images), "-j")
        assert dumped.returncode == 0, dumped.stderr
        last = int(target.stdout.read().split()[-1])  # to EOF: the dump killed it
        assert target.wait() == -signal.SIGKILL
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
        target.stdout.close()

    refused = run_cli("restore", "-D", str(images))
    assert refused.returncode == 1 and "restore with --shell-job" in refused.stderr
    cli = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(images), "-j"], cwd=REPO,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert int(cli.stdout.readline()) == last + 1  # the restored loop goes on, on the restoring caller's pipe
    finally:
        subprocess.run(["kill", "-KILL", str(target.pid)])
        cli.wait(timeout=10)
        cli.stdout.close()
        cli.stderr.close()
