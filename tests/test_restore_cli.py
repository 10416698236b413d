"""The restore command line: a shell job reattached to the caller's stdio, and bad images refused before any fork."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from restore_support import dumped_sleep, run_cli
from runtime.images import digest

REPO = Path(__file__).resolve().parent.parent
PYTHON_LOOP = "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n"


def read_numbers(stream, count: int) -> list[int]:
    return [int(stream.readline()) for _ in range(count)]


def test_shell_job_restore_writes_on_to_the_restoring_callers_pipe(tmp_path):
    images = tmp_path / "images"
    target = subprocess.Popen([sys.executable, "-c", PYTHON_LOOP], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        read_numbers(target.stdout, 5)
        refused = run_cli("dump", "-t", str(target.pid), "-D", str(images))
        assert refused.returncode == 1 and "pipe" in refused.stderr and target.poll() is None

        dumped = run_cli("dump", "-t", str(target.pid), "-D", str(images), "--shell-job")
        assert dumped.returncode == 0, dumped.stderr
        before = [int(line) for line in target.stdout.read().split()]  # to EOF: the dump killed it
        assert target.wait() == -signal.SIGKILL
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()

    cli = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(images), "--shell-job"],
                           cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        after = read_numbers(cli.stdout, 10)
        assert after == list(range(before[-1] + 1, before[-1] + 11)), "no gap, no repeat, on the new pipe"
        assert os.readlink(f"/proc/{target.pid}/fd/1") == os.readlink(f"/proc/{cli.pid}/fd/1")
    finally:
        os.kill(target.pid, signal.SIGKILL)
        status = cli.wait(timeout=10)
    assert status != 0  # the restored process died of SIGKILL and the command says so


@pytest.fixture
def sleep_images(tmp_path) -> tuple[int, Path]:
    """Images of a `sleep` that the dump killed and this fixture reaped."""
    images = tmp_path / "images"
    return dumped_sleep(images), images


def refit_checksum(images: Path, name: str) -> None:
    """A hostile image is self-consistent: its inventory vouches for the edited file."""
    inventory_path = images / "inventory.json"
    inventory = json.loads(inventory_path.read_text())
    inventory["files"][name] = digest.of_bytes((images / name).read_bytes())
    inventory_path.write_text(json.dumps(inventory))


def assert_refused(pid: int, images: Path, *words: str) -> None:
    result = run_cli("restore", "-D", str(images), "-d")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr
    assert not os.path.exists(f"/proc/{pid}"), "a refused image must not leave a process behind"


def test_restore_refuses_a_truncated_pages_file(sleep_images):
    pid, images = sleep_images
    pages = images / f"pages-{pid}.img"
    os.truncate(pages, pages.stat().st_size - 4096)
    assert_refused(pid, images, f"pages-{pid}.img")


def test_restore_refuses_a_vma_in_the_kernel_half_even_with_a_matching_checksum(sleep_images):
    pid, images = sleep_images
    name = f"process-{pid}.json"
    process = json.loads((images / name).read_text())
    process["vmas"][0]["start"] = 0xFFFF800000000000
    process["vmas"][0]["end"] = 0xFFFF800000001000
    (images / name).write_text(json.dumps(process))
    refit_checksum(images, name)
    assert_refused(pid, images, name, "vmas[0]")


def test_restore_refuses_a_page_run_beyond_the_pages_file(sleep_images):
    pid, images = sleep_images
    name = f"process-{pid}.json"
    process = json.loads((images / name).read_text())
    process["page_runs"][-1]["nr_pages"] += 1024
    (images / name).write_text(json.dumps(process))
    refit_checksum(images, name)
    assert_refused(pid, images, name, "page_runs")


def test_restore_refuses_a_directory_without_inventory(sleep_images):
    pid, images = sleep_images
    (images / "inventory.json").unlink()
    assert_refused(pid, images, "inventory.json")
