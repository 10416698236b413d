"""The image directory a dump writes into: another user's or a shared one refused, an earlier image replaced.

Why: a dump (usually root) writes all of a process's memory into the
directory. The probe of issue 10 pre-created empty files with the image's
names in a directory it could write, and read root's memory from them
afterwards; issue 9 found an earlier image's files left beside a new one.
Each test dumps a real `sleep` with the command line and looks at the
directory and the target afterwards.
"""

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from restore_support import run_cli, wait_for

NOBODY = 65534


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: open(f"/proc/{proc.pid}/stat").read().split()[2] == "S", what="sleep to sleep")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def shared_dir():
    """A directory outside pytest's 0700 tree, so that another user can really reach it."""
    directory = Path(tempfile.mkdtemp(prefix="revive-dumpdir-"))
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=True)


def plant(directory: Path, names: list[str]) -> None:
    """Empty files with the image's names, owned by nobody, as the probe's other user left them."""
    for name in names:
        (directory / name).touch()
        os.chown(directory / name, NOBODY, NOBODY)


def image_names(pid: int) -> list[str]:
    return ["inventory.json", "tree.json", f"pages-{pid}.img", f"process-{pid}.json", f"xstate-{pid}.img",
            f"vdso-{pid}.img"]


def refused(sleeper, directory: Path, *words: str, extra: tuple[str, ...] = ()) -> None:
    result = run_cli("dump", "-t", str(sleeper.pid), "-D", str(directory), *extra)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"revive: {directory}: ")
    for word in words:
        assert word in line, line
    assert sleeper.poll() is None, "a refused dump leaves the target running"


def test_a_directory_others_can_write_is_refused_and_planted_files_stay_empty(sleeper, shared_dir):
    images = shared_dir / "images"
    images.mkdir()
    os.chmod(images, 0o777)
    plant(images, image_names(sleeper.pid))
    refused(sleeper, images, "writable by group or others (mode 0777)", "--force-dir")
    for name in image_names(sleeper.pid):
        st = os.stat(images / name)
        assert (st.st_uid, st.st_size) == (NOBODY, 0), f"{name} was written"


def test_a_directory_group_can_write_is_refused(sleeper, shared_dir):
    os.chmod(shared_dir, 0o770)
    refused(sleeper, shared_dir, "writable by group or others (mode 0770)")


def test_a_directory_of_another_user_is_refused_even_with_force(sleeper, shared_dir):
    images = shared_dir / "images"
    images.mkdir(mode=0o700)
    os.chown(images, NOBODY, NOBODY)
    refused(sleeper, images, f"owned by uid {NOBODY}, not by this user (uid 0)")
    refused(sleeper, images, f"owned by uid {NOBODY}", extra=("--force-dir",))
    assert os.listdir(images) == []


def test_force_dir_takes_an_own_shared_directory_private_and_writes_new_files(sleeper, shared_dir):
    images = shared_dir / "images"
    images.mkdir()
    os.chmod(images, 0o777)
    plant(images, image_names(sleeper.pid))
    result = run_cli("dump", "-t", str(sleeper.pid), "-D", str(images), "--force-dir")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(images).st_mode) == 0o700
    for name in os.listdir(images):
        st = os.stat(images / name)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), name
    assert os.stat(images / f"pages-{sleeper.pid}.img").st_size > 0


def test_a_symlink_as_the_image_directory_is_refused(sleeper, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    os.symlink(tmp_path / "real", tmp_path / "link")
    refused(sleeper, tmp_path / "link", "a symbolic link: not followed")


def test_a_directory_with_other_files_is_refused_untouched(sleeper, tmp_path):
    images = tmp_path / "images"
    images.mkdir(mode=0o700)
    (images / "notes.txt").write_text("mine\n")
    (images / f"pages-{sleeper.pid}.img").write_bytes(b"old")
    refused(sleeper, images, "holds 'notes.txt'", "not part of an image")
    assert sorted(os.listdir(images)) == ["notes.txt", f"pages-{sleeper.pid}.img"]
    assert (images / f"pages-{sleeper.pid}.img").read_bytes() == b"old"


def test_a_dump_over_an_earlier_image_of_another_process_leaves_none_of_its_files(tmp_path):
    images = tmp_path / "images"
    pids = []
    for _ in range(2):
        proc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: open(f"/proc/{proc.pid}/stat").read().split()[2] == "S", what="sleep to sleep")
            result = run_cli("dump", "-t", str(proc.pid), "-D", str(images))
            assert result.returncode == 0, result.stderr
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        pids.append(proc.pid)
    assert sorted(os.listdir(images)) == sorted(image_names(pids[1]))
    shown = run_cli("show", str(images), "--json")
    assert shown.returncode == 0 and f'"pid": {pids[1]}' in shown.stdout
