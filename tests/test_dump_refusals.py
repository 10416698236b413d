"""What the dump refuses, and failures half-way: the target is left running exactly as before."""

import os
import signal
import subprocess

import pytest

from dump_support import start_target, target_path
from restore_support import wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError
from runtime.images.model import FdKind
from runtime.kernel.procfs.files import proc_path
from runtime.kernel.procfs.status import read_status

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
                            stderr=subprocess.DEVNULL, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("refused_target, message", [
    ("thread_creds", r"thread \d+ has credentials of its own \(a raw setuid/setgid/capset in one thread\): "
                     r"not supported"),
    ("thread_slack", r"thread \d+ has its own timer_slack \(123456, the leader's is 50000\): not supported"),
    ("thread_seccomp", r"thread \d+ runs under seccomp \(filter mode\): restoring seccomp filters is not supported yet"),
    ("socket", r"fd 3 \(socket socket:\[\d+\]\): not supported yet"),
    ("pidfd", r"fd 3 \(anonymous inode \[pidfd\]\): not supported yet"),
    ("cpu_timer", r"POSIX timer 0 counts clock -\d+, the CPU time of another process or thread "
                  r"\(clock_getcpuclockid\): not supported"),
    ("flock", r"fd 3 \(regular file .*/locked \(deleted\)\) holds a file lock \(1: FLOCK  ADVISORY  WRITE .*\): "
              r"restoring locks on this kind of file is not supported yet"),
    ("seccomp", r"runs under seccomp \(filter mode\): restoring seccomp filters is not supported yet"),
    ("mlock", r"mapping 0x[0-9a-f]+-0x[0-9a-f]+ \(anonymous\): locked pages \(mlock\) are not restored yet "
              r"\(VmFlag 'lo'\)"),
], indirect=["refused_target"])
def test_dump_refuses_what_is_not_supported_and_leaves_it_running(refused_target, message, tmp_path):
    with pytest.raises(DumpError, match=f"pid {refused_target.pid}: {message}"):
        dump(refused_target.pid, tmp_path / "img", LEAVE_RUNNING)
    assert_left_as_before(refused_target.pid)
    assert not (tmp_path / "img").exists()
    # Still seizable and dumpable for what it supports: nothing of ours was left in it.
    assert refused_target.alive()


def test_dump_refuses_stdio_pipe_without_shell_job(piped_sleep, tmp_path):
    """The other end of its stdout is ours, outside the dump: a restored pipe could not be ours too."""
    with pytest.raises(DumpError, match=rf"fd 1 \(pipe:\[(\d+)\]\): it is also held by pid {os.getpid()}, "
                                        r"outside the dump: name it with --external pipe:\[\1\] and restore with "
                                        r"--inherit-fd fd\[N\]:pipe:\[\1\] \(or dump that process's tree, or use "
                                        r"--shell-job for stdio\)"):
        dump(piped_sleep.pid, tmp_path / "img", LEAVE_RUNNING)
    assert_left_as_before(piped_sleep.pid)


def test_dump_takes_stdio_pipe_as_inherited_with_shell_job(piped_sleep, tmp_path):
    process = dump(piped_sleep.pid, tmp_path / "img", DumpOptions(leave_running=True, shell_job=True))
    kinds = {entry.id: entry.kind for entry in process.files}
    fds = {fd.fd: kinds[fd.file_id] for fd in process.fds}
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


@pytest.mark.parametrize("refused_target", ["child"], indirect=True)
def test_dump_refuses_a_tree_for_what_a_child_holds_naming_the_child(refused_target, tmp_path):
    """The whole tree is dumped or none of it: a child's pidfd refuses the dump, and both run on untouched."""
    child = int(refused_target.info["child"])
    with pytest.raises(DumpError, match=rf"^pid {child}: fd 3 \(anonymous inode \[pidfd\]\): not supported yet$"):
        dump(refused_target.pid, tmp_path / "img")  # default mode: a dump that went on would kill both
    assert_left_as_before(refused_target.pid)
    assert_left_as_before(child)
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("refused_target", ["vfork"], indirect=True)
def test_dump_refuses_a_parent_waiting_in_vfork_and_its_child_without_hanging(refused_target, tmp_path):
    """A vfork parent never reaches the stop a seize asks for: the shared memory is seen first and refused."""
    child, parent = int(refused_target.info["child"]), int(refused_target.info["parent"])
    assert parent == refused_target.pid
    with pytest.raises(DumpError, match=rf"^pid {parent}: shares its memory with its child {child} \(vfork"):
        dump(parent, tmp_path / "img")
    with pytest.raises(DumpError, match=rf"^pid {child}: shares its memory with its parent {parent} \(vfork"):
        dump(child, tmp_path / "img")
    assert read_status(parent).tracer_pid == read_status(child).tracer_pid == 0
    assert not (tmp_path / "img").exists()
    os.kill(child, signal.SIGKILL)  # the parent's vfork returns, and it exits


def test_dump_refuses_a_shell_waiting_for_its_job_and_both_keep_running(tmp_path):
    """A refused tree is left as it was: bash, stopped in its wait while its child was seized too, waits on."""
    shell = subprocess.Popen(["bash", "-c", "sleep 1000 & echo $!; wait"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        child = int(shell.stdout.readline())
        wait_for(lambda: read_status(shell.pid).state == "S", what="bash to wait")
        blocked = read_status(shell.pid).sig_blocked  # bash blocks SIGCHLD around its wait
        with pytest.raises(DumpError, match=rf"^pid {shell.pid}: fd 1 \(pipe:\[\d+\]\): it is also held by "
                                            rf"pid {os.getpid()}, outside the dump"):
            dump(shell.pid, tmp_path / "img")
        assert_left_as_before(shell.pid, blocked)
        assert_left_as_before(child)
        os.kill(child, signal.SIGTERM)
        assert shell.wait(timeout=10) == 0  # bash's wait returned: it was still the parent, unharmed
    finally:
        os.killpg(shell.pid, signal.SIGKILL) if shell.poll() is None else None
        shell.wait()
        shell.stdout.close()


def test_dump_refuses_a_process_in_another_namespace_naming_it(tmp_path):
    proc = subprocess.Popen(["unshare", "--uts", "sleep", "1000"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: read_status(proc.pid).name == "sleep", what="unshare to exec sleep")
        with pytest.raises(DumpError, match=r"lives in another uts namespace \(uts:\[\d+\], the runtime's is "
                                            r"uts:\[\d+\]\): restoring namespaces is not supported yet"):
            dump(proc.pid, tmp_path / "img")
        assert_left_as_before(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_dump_refuses_a_session_led_from_outside_without_shell_job(tmp_path, reaper):
    """A session whose leader lives outside the dump (a shell, here sh started with setsid) is the caller's."""
    leader = subprocess.Popen(["setsid", "sh", "-c", "sleep 1000; :"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    try:
        children = proc_path(leader.pid, f"task/{leader.pid}/children")
        wait_for(lambda: open(children).read().split(), what="sh to start sleep")
        pid = int(open(children).read().split()[0])
        wait_for(lambda: read_status(pid).name == "sleep", what="the child to exec sleep")
        with pytest.raises(DumpError, match=rf"pid {pid}: its session {leader.pid} is led by pid "
                                            rf"{leader.pid}, outside the dump: dump with --shell-job"):
            dump(pid, tmp_path / "img")
        assert_left_as_before(pid)
    finally:
        leader.kill()
        leader.wait()
        if pid is not None:  # orphaned by sh's death, ours to reap: the test is the subreaper
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
