"""runtime/files/: the fd table of a real process dumped into slots and entries, checked, and reopened.

Why these: the table is where the kernel's sharing (one open file
description under two fds) meets the kinds; a dup must come back as one
entry and be restored as one open file, a second open() as two, and an open
file no kind takes must be refused naming its fd and what it is.
"""

import dataclasses
import json
import os
import stat
import subprocess
import sys

import pytest

from images_sample import snapshot, start_sleeper, stop_and_reap
from restore_support import wait_for
from runtime.errors import DumpError, ImageError
from runtime.files import registry, table
from runtime.images.model import EpollTarget, FdKind, FdSlot, FileEntry, FileNode
from runtime.kernel.procfs.fds import read_open_files

SCRIPT = """
import json, os, sys, time
data = os.open("data", os.O_RDWR | os.O_CREAT, 0o600)
os.write(data, b"hello world")
os.lseek(data, 6, os.SEEK_SET)
dup = os.dup(data)
again = os.open("data", os.O_RDONLY)
null = os.open("/dev/null", os.O_WRONLY)
extra = os.pidfd_open(os.getpid()) if sys.argv[1] == "pidfd" else -1
os.set_inheritable(dup, True)
print(json.dumps(dict(data=data, dup=dup, again=again, null=null, extra=extra)), flush=True)
time.sleep(1000)
"""


@pytest.fixture
def holder(request, tmp_path):
    """A python3 holding a file under two fds, the same file opened again, /dev/null, and maybe a pidfd."""
    out = tmp_path / "fds.json"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, getattr(request, "param", "")], cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: out.read_text().endswith("\n"), what="the holder to open its files")
        yield proc.pid, json.loads(out.read_text()), tmp_path
    finally:
        proc.kill()
        proc.wait()


def test_a_dup_is_one_entry_and_a_second_open_another(holder):
    pid, fds, workdir = holder
    slots, entries = table.dump_table(pid, read_open_files(pid), shell_job=False)
    by_fd = {slot.fd: slot for slot in slots}
    files = {entry.id: entry for entry in entries}
    assert [slot.fd for slot in slots] == sorted(by_fd)
    assert by_fd[fds["data"]].file_id == by_fd[fds["dup"]].file_id != by_fd[fds["again"]].file_id
    assert sorted(entry.id for entry in entries) == sorted({slot.file_id for slot in slots})
    data, again, null = (files[by_fd[fds[name]].file_id] for name in ("data", "again", "null"))
    assert (data.kind, data.node.path, data.pos, data.flags & os.O_ACCMODE) == (FdKind.FILE, str(workdir / "data"),
                                                                               6, os.O_RDWR)
    assert (again.pos, again.flags & os.O_ACCMODE) == (0, os.O_RDONLY)
    assert (null.kind, null.node.path, stat.S_ISCHR(null.node.mode)) == (FdKind.CHR, "/dev/null", True)
    # close-on-exec is the slot's: the dup was made inheritable, its original was not.
    assert (by_fd[fds["data"]].cloexec, by_fd[fds["dup"]].cloexec) == (True, False)


@pytest.mark.parametrize("holder", ["pidfd"], indirect=True)
def test_an_open_file_no_kind_takes_is_refused_naming_the_fd(holder):
    pid, fds, _ = holder
    with pytest.raises(DumpError, match=rf"^pid {pid}: fd {fds['extra']} \(anonymous inode \[pidfd\]\): "
                                        r"not supported yet$"):
        table.dump_table(pid, read_open_files(pid), shell_job=False)


def test_the_restore_half_opens_a_shared_entry_once(holder):
    """In a forked child, as the restoring child does: the dup shares its offset again, the other open does not."""
    pid, fds, _ = holder
    slots, entries = table.dump_table(pid, read_open_files(pid), shell_job=False)
    process = dataclasses.replace(snapshot(pid).process, fds=slots, files=entries)
    table.check(process.files, "process.json")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.dup2(write_end, 100)
            table.restore_table(process, {}, ())
            os.lseek(fds["data"], 2, os.SEEK_CUR)
            found = [os.lseek(fds[name], 0, os.SEEK_CUR) for name in ("data", "dup", "again")]
            found.append(os.get_inheritable(fds["dup"]))
            os.write(100, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        found = json.loads(reader.read() or "null")
    os.waitpid(child, 0)
    assert found == [8, 8, 0, True]


def test_every_fd_kind_has_exactly_one_module_in_the_registry():
    assert sorted(k.kind.value for k in registry.KINDS) == sorted(k.value for k in FdKind)


@pytest.mark.parametrize("entry, field, words", [
    (FileEntry(1, FdKind.FILE), "files[0].node", "a file of kind file needs a path"),
    (FileEntry(1, FdKind.CHR, node=FileNode("/etc/hostname", stat.S_IFREG | 0o644)), "files[0].node.mode",
     "is not the mode of a file a chr descriptor reopens"),
    (FileEntry(1, FdKind.FILE, node=FileNode("/dev/null", stat.S_IFCHR | 0o666)), "files[0].node.mode",
     "is not the mode of a file a file descriptor reopens"),
    (FileEntry(1, FdKind.INHERIT, node=FileNode("/dev/null", stat.S_IFCHR | 0o666)), "files[0].node",
     "a file of kind inherit has no path"),
])
def test_each_kind_checks_its_own_entries(entry, field, words):
    with pytest.raises(ImageError) as refused:
        registry.check(entry, "process-1.json", "files[0]")
    assert str(refused.value).startswith(f"process-1.json: {field}: ") and words in str(refused.value)


def test_epoll_instances_open_inner_first_and_a_loop_is_refused():
    """An instance watching another is opened after it; two watching each other (no dump writes that) are refused."""
    sleeper = start_sleeper()
    try:
        process = snapshot(sleeper.pid).process
    finally:
        stop_and_reap(sleeper)
    inner = FileEntry(1, FdKind.EPOLL, epoll=(EpollTarget(3, 1, 0),))
    outer = FileEntry(2, FdKind.EPOLL, epoll=(EpollTarget(4, 1, 0),))
    null = FileEntry(3, FdKind.CHR, node=FileNode("/dev/null", stat.S_IFCHR | 0o666))
    slots = (FdSlot(3, 3, False), FdSlot(4, 1, False), FdSlot(5, 2, False))
    nested = dataclasses.replace(process, fds=slots, files=(inner, outer, null))
    table.check_open_order(nested, (), "process-1.json")
    assert [slot.fd for slot in table._opening_order(nested, table.entries_by_id(nested))] == [3, 4, 5]
    looped = dataclasses.replace(nested, files=(dataclasses.replace(inner, epoll=(EpollTarget(5, 1, 0),)), outer,
                                                null))
    with pytest.raises(ImageError, match=r"^process-1\.json: fds: epoll instances nested more than 4 deep, or in a "
                                         r"loop$"):
        table.check_open_order(looped, (), "process-1.json")
