"""What the dump refuses, and failures half-way: the target is left running exactly as before."""

import subprocess

import pytest

from dump_support import start_target, target_path
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError
from runtime.images.model import FdKind
from runtime.procfs.status import read_status

LEAVE_RUNNING = DumpOptions(leave_running=True)


def assert_left_as_before(pid, sig_blocked=0):
    st = read_status(pid)
    assert st.tracer_pid == 0 and st.state in ("S", "R"), st
    assert st.sig_blocked == sig_blocked


@pytest.fixture
def refused_target(tmp_path, request):
    target = start_target([str(target_path("dump_refused")), request.param], tmp_path)
    yield target
    target.stop()


@pytest.fixture
def piped_sleep():
    proc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("refused_target, message", [
    ("thread", r"multi-threaded process \(2 threads\): not supported yet"),
    ("socket", r"fd 3 \(socket socket:\[\d+\]\): not supported yet"),
    ("eventfd", r"fd 3 \(anonymous inode \[eventfd\]\): not supported yet"),
    ("pipe", r"fd 3 \(pipe pipe:\[\d+\]\): not supported yet"),
], indirect=["refused_target"])
def test_dump_refuses_what_is_not_supported_and_leaves_it_running(refused_target, message, tmp_path):
    with pytest.raises(DumpError, match=f"pid {refused_target.pid}: {message}"):
        dump(refused_target.pid, tmp_path / "img", LEAVE_RUNNING)
    assert_left_as_before(refused_target.pid)
    assert not (tmp_path / "img").exists()
    # Still seizable and dumpable for what it supports: nothing of ours was left in it.
    assert refused_target.alive()


def test_dump_refuses_stdio_pipe_without_shell_job(piped_sleep, tmp_path):
    with pytest.raises(DumpError, match=r"fd 1 \(pipe pipe:\[\d+\]\): not supported yet \(with --shell-job"):
        dump(piped_sleep.pid, tmp_path / "img", LEAVE_RUNNING)
    assert_left_as_before(piped_sleep.pid)


def test_dump_takes_stdio_pipe_as_inherited_with_shell_job(piped_sleep, tmp_path):
    process = dump(piped_sleep.pid, tmp_path / "img", DumpOptions(leave_running=True, shell_job=True))
    fds = {fd.fd: fd.kind for fd in process.fds}
    assert fds[0] is FdKind.CHR and fds[1] is FdKind.INHERIT and fds[2] is FdKind.CHR
    assert process.shell_job and (tmp_path / "img" / "inventory.json").exists()
    assert_left_as_before(piped_sleep.pid)


@pytest.fixture
def tiny_fs(tmp_path):
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_dump_failing_after_infection_cures_and_leaves_no_inventory(tmp_path, tiny_fs):
    """The pages (about 300 KiB) do not fit a 128 KiB tmpfs: the splice fails while the parasite runs."""
    target = start_target([str(target_path("dump_pages")), str(tmp_path / "backing")], tmp_path)
    try:
        with pytest.raises(DumpError, match=f"pid {target.pid}: .*No space left on device"):
            dump(target.pid, tiny_fs / "img", LEAVE_RUNNING)
        assert_left_as_before(target.pid)
        assert not (tiny_fs / "img").exists()
        maps = open(f"/proc/{target.pid}/maps").read()
        assert "memfd" not in maps  # the parasite's area is gone
        # The target counts on: it still runs its own code.
        dump(target.pid, tmp_path / "img", LEAVE_RUNNING)
        assert (tmp_path / "img" / "inventory.json").exists()
    finally:
        target.stop()
