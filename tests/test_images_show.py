"""`python -m runtime show`: a real image printed for people and as JSON; broken images are one line, exit 1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from images_sample import image_of_a_sleep
from runtime.images import codec, names as layout
from runtime.images.model import Inventory, Process

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    directory = tmp_path_factory.mktemp("show") / "img"
    return directory, image_of_a_sleep(directory)


def run_show(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", "show", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_show_prints_identity_vmas_threads_rseq_and_vdso(image):
    directory, snap = image
    result = run_show(directory)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    p = snap.process
    assert f"process {p.pid} (sleep)" in out
    assert "matches this CPU" in out
    for vma in p.vmas:
        assert f"{vma.start:#x}" in out
    assert f"page runs: {len(p.page_runs)} runs, {sum(r.nr_pages for r in p.page_runs)} pages" in out
    assert f"thread {p.pid} 'sleep' (in syscall {p.threads[0].in_syscall}): rip {p.threads[0].regs.rip:#x}" in out
    assert p.threads[0].in_syscall is not None  # a sleep is asleep in nanosleep or clock_nanosleep
    assert f"threads         1: {p.pid}" in out
    assert f"rseq: area {p.threads[0].rseq.address:#x}" in out and "case outside" in out
    assert f"vdso {p.vdso.vdso_start:#x} size {p.vdso.vdso_size}" in out
    assert "vdso on restore here: remap" in out


def test_show_json_is_the_codec_form_of_every_file(image):
    directory, snap = image
    result = run_show(directory, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert codec.decode(Process, data["processes"][0], "stdout") == snap.process
    inventory = codec.decode(Inventory, data["inventory"], "stdout")
    assert inventory.root_pid == snap.process.pid and inventory.format_version == layout.FORMAT_VERSION


def test_show_of_a_corrupt_image_is_one_line_and_exit_1(image, tmp_path):
    directory, snap = image
    broken = tmp_path / "img"
    broken.mkdir()
    for path in directory.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    name = layout.process_file(snap.process.pid)
    (broken / name).write_bytes((broken / name).read_bytes()[:-10])
    result = run_show(broken)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"revive: {name}: digest ")


def test_show_without_a_directory_is_bad_usage():
    assert run_show().returncode == 2
