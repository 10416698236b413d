"""SysV shared memory: a segment the tree attaches comes back with its id, key, mode and data, attached where it was.

The target (tests/targets/sysv_shm.c) attaches one segment twice, read-write
(split in three by an mprotect) and SHM_RDONLY, and checks after "go" that
the data, the key's id, its attaches' protections and a second process's
writes are as they were; the test itself is that second process, attaching
the restored segment by its key. Every segment a test makes is removed in
its finally (a segment outlives its processes).
"""

import contextlib
import ctypes
import itertools
import os
import shutil
from dataclasses import replace

import pytest

from dump_support import target_path
from restore_support import lines, run_cli, wait_for
from runtime import faults
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError, ImageError, RestoreError
from runtime.images.loader import load
from runtime.images.model import VmaKind
from runtime.kernel.procfs import sysvipc
from test_images_store import rewrite_process
from test_images_tree import rewrite_tree
from tree_support import exists, start_tree, subreaper

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
libc.shmdt.argtypes = (ctypes.c_void_p,)
libc.shmget.argtypes = (ctypes.c_int32, ctypes.c_size_t, ctypes.c_int)
IPC_RMID = 0
PAGE = 4096
SIZE = 3 * PAGE + 100  # the target's segment
OUTSIDE_AT, OUTSIDE = 500, b"from outside"
WRITE_AT = 1000
_keys = itertools.count()


def pattern(i: int) -> int:
    return (i * 7 + 3) & 0xFF


def fresh_key() -> int:
    """A key no segment has now, and that this run gives out once."""
    taken = {segment.key for segment in sysvipc.read_shm().values()}
    while True:
        key = 0x5E500000 | ((os.getpid() & 0xFFF) << 8) | next(_keys) & 0xFF
        if key not in taken:
            return key


def segment(shmid: int) -> sysvipc.ShmSegment | None:
    return sysvipc.read_shm().get(shmid)


def shm_line(shmid: int) -> str:
    """The segment's whole line of /proc/sysvipc/shm (times, pids and attach count too)."""
    with open(sysvipc.SHM_LIST) as f:
        return next(line for line in f if line.split()[1:2] == [str(shmid)])


def sysv_maps(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return [line.split() for line in f if "/SYSV" in line]


@contextlib.contextmanager
def attached(shmid: int):
    """The segment attached in this process, as a second program would attach it."""
    address = libc.shmat(shmid, None, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        yield address
    finally:
        libc.shmdt(address)


def remove(*shmids: int) -> None:
    for shmid in shmids:
        libc.shmctl(shmid, IPC_RMID, None)


def start(tmp_path, key: int, *options: str):
    tree = start_tree([str(target_path("sysv_shm")), f"{key:x}", *options], tmp_path)
    if "child" in tree.info:
        tree.pids = [tree.root, int(tree.info["child"])]
    return tree


def go_and_read(tree, tags: tuple[str, ...]) -> dict[str, list[str]]:
    """Touch "go" and return each tag's report line (its words after the tag)."""
    (tree.workdir / "go").touch()
    wait_for(lambda: all(lines(tree.out, tag) for tag in tags), what=f"the reports {tags}")
    return {tag: lines(tree.out, tag)[0][1:] for tag in tags}


CHECKS = ("data", "id", "outside", "write", "reprotect", "rdonly")


def test_a_segment_comes_back_with_its_id_key_mode_data_and_both_attaches_and_a_second_process_sees_it(
        reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key)
    shmid = int(tree.info["shmid"])
    try:
        before, maps_before = segment(shmid), sysv_maps(tree.root)
        assert (before.key, before.perms, before.size, before.nattch) == (key, 0o640, SIZE, 4)
        tree.dump()
        assert segment(shmid) is None  # the dump took the segment with the tree
        shown = run_cli("show", str(tree.images))
        assert shown.returncode == 0, shown.stderr
        assert f"SysV segment {shmid} key {key:#010x} mode 640" in shown.stdout
        tree.restore()
        after = segment(shmid)
        assert (after.key, after.perms, after.size, after.nattch, after.uid, after.gid, after.cuid, after.cgid) == (
            before.key, before.perms, before.size, before.nattch, before.uid, before.gid, before.cuid, before.cgid)
        assert sysv_maps(tree.root) == maps_before  # same addresses, protections, offsets, shmid and name
        found = libc.shmget(ctypes.c_int32(key), 0, 0)
        assert found == shmid
        with attached(found) as address:
            assert ctypes.string_at(address, SIZE)[2048:] == bytes(pattern(i) for i in range(2048, SIZE))
            ctypes.memmove(address + OUTSIDE_AT, OUTSIDE, len(OUTSIDE))
            reports = go_and_read(tree, CHECKS)
            assert reports == {"data": ["ok"], "id": [str(shmid)], "outside": ["ok"], "write": ["ok"],
                               "reprotect": ["ok"], "rdonly": ["ok"]}
            assert ctypes.string_at(address + WRITE_AT, 13) == b"written after"  # the restored process's write
    finally:
        tree.stop()
        remove(shmid)


def test_a_forked_child_shares_the_restored_segment_with_its_parent(reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key, "fork")
    shmid = int(tree.info["shmid"])
    try:
        assert segment(shmid).nattch == 8
        tree.dump()
        tree.restore()
        assert all(exists(pid) for pid in tree.pids)
        assert segment(shmid).nattch == 8
        reports = go_and_read(tree, ("data", "shared", "child data", "child shared"))
        assert reports == {"data": ["ok"], "shared": ["ok"], "child data": ["data", "ok"],
                           "child shared": ["shared", "ok"]}
    finally:
        tree.stop()
        remove(shmid)


def test_a_segment_removed_while_attached_stays_attached_and_goes_when_its_process_exits(reaper, tmp_path):
    """Locked too (SHM_LOCK): the lock comes back with it."""
    key = fresh_key()
    tree = start(tmp_path, key, "rmid", "lock")
    shmid = int(tree.info["shmid"])
    try:
        before, maps_before = segment(shmid), sysv_maps(tree.root)
        assert before.removed and before.locked and before.key == 0
        tree.dump()
        tree.restore()
        after = segment(shmid)
        assert after is not None and after.removed and after.locked and after.key == 0 and after.perms == before.perms
        assert sysv_maps(tree.root) == maps_before  # still /SYSV<the key it was made with> (deleted)
        reports = go_and_read(tree, ("data", "id", "write"))
        assert reports == {"data": ["ok"], "id": ["-1"], "write": ["ok"]}
        tree.stop()
        assert segment(shmid) is None
    finally:
        tree.stop()
        remove(shmid)


def test_a_leave_running_dump_leaves_the_segment_untouched_and_a_restore_waits_until_it_is_gone(reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key)
    shmid = int(tree.info["shmid"])
    try:
        line = shm_line(shmid)
        tree.dump(leave_running=True)
        assert shm_line(shmid) == line  # attach count, times, last pid: the dump attached nothing
        tree.stop()  # the process goes; its segment (not removed) stays
        assert segment(shmid).nattch == 0
        with pytest.raises(RestoreError, match=rf"segment {shmid} \(key {key:#010x}\): the id is in use"):
            tree.restore()
        assert not exists(tree.root)
        remove(shmid)
        tree.restore()
        assert go_and_read(tree, ("data", "id"))["id"] == [str(shmid)]
    finally:
        tree.stop()
        remove(shmid)


def test_a_restore_refuses_a_key_taken_since_and_makes_nothing(reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key)
    shmid = int(tree.info["shmid"])
    other = -1
    try:
        tree.dump()
        other = libc.shmget(ctypes.c_int32(key), PAGE, 0o1600)
        assert other >= 0
        with pytest.raises(RestoreError, match=rf"segment {shmid} .*: the key is in use by segment {other}"):
            tree.restore()
        assert not exists(tree.root) and segment(shmid) is None
        remove(other)
        tree.restore()
        assert go_and_read(tree, ("data",))["data"] == ["ok"]
    finally:
        tree.stop()
        remove(shmid, other)


def test_a_failed_restore_removes_the_segment_it_made(reaper, tmp_path, monkeypatch):
    key = fresh_key()
    tree = start(tmp_path, key, "fork")
    shmid = int(tree.info["shmid"])
    try:
        tree.dump()
        monkeypatch.setenv(faults.ENV, "restore.restorer.protect_vmas")  # after map_vmas attached it
        with pytest.raises(RestoreError, match="protect_vmas"):
            tree.restore()
        monkeypatch.delenv(faults.ENV)
        assert segment(shmid) is None and not any(exists(pid) for pid in tree.pids)
        tree.restore()
        assert go_and_read(tree, ("shared",))["shared"] == ["ok"]
    finally:
        tree.stop()
        remove(shmid)


def test_an_attach_partly_unmapped_is_refused_and_left_running(reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key, "partial")
    shmid = int(tree.info["shmid"])
    try:
        with pytest.raises(DumpError, match=rf"a part of an attach of SysV shared memory segment {shmid}"):
            dump(tree.root, tmp_path / "img", DumpOptions())
        assert not (tmp_path / "img").exists()
        assert go_and_read(tree, ("data",))["data"] == ["ok"]
    finally:
        tree.stop()
        remove(shmid)


def test_a_segment_another_process_attaches_too_is_refused(reaper, tmp_path):
    key = fresh_key()
    tree = start(tmp_path, key)
    shmid = int(tree.info["shmid"])
    try:
        with attached(shmid):
            with pytest.raises(DumpError, match=rf"segment {shmid} .* is attached 5 times, 4 of them in the dump"):
                dump(tree.root, tmp_path / "img", DumpOptions())
        assert segment(shmid).nattch == 4
        assert go_and_read(tree, ("data",))["data"] == ["ok"]
    finally:
        tree.stop()
        remove(shmid)


CREATOR = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmget.argtypes = (ctypes.c_int32, ctypes.c_size_t, ctypes.c_int)
os.setegid(65534)
os.seteuid(65534)  # the segment's creator and first owner: nobody
segment = libc.shmget(ctypes.c_int32(int(sys.argv[1], 16)), 4096, 0o1604)
os.seteuid(0)
os.setegid(0)
address = libc.shmat(segment, None, 0)
ctypes.memmove(address, b"made by nobody", 14)
os.write(1, f"ready pid={os.getpid()} shmid={segment}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
os.write(1, f"data {ctypes.string_at(address, 14).decode()}\\n".encode())
time.sleep(1000)
"""


def test_a_segment_keeps_its_creator_and_owner_when_another_user_made_it(reaper, tmp_path):
    key = fresh_key()
    tree = start_tree(["/usr/bin/python3", "-c", CREATOR, f"{key:x}"], tmp_path)
    shmid = int(tree.info["shmid"])
    try:
        before = segment(shmid)
        assert (before.uid, before.gid, before.cuid, before.cgid, before.perms) == (65534, 65534, 65534, 65534, 0o604)
        tree.dump()
        tree.restore()
        after = segment(shmid)
        assert (after.key, after.uid, after.gid, after.cuid, after.cgid, after.perms) == (
            key, 65534, 65534, 65534, 65534, 0o604)
        assert os.geteuid() == 0 and os.getegid() == 0  # the restore's own ids came back
        assert go_and_read(tree, ("data",))["data"] == ["made", "by", "nobody"]
    finally:
        tree.stop()
        remove(shmid)


@pytest.fixture(scope="module")
def sysv_image(tmp_path_factory):
    """The target's image, dumped leaving it running (its segment removed once the target is gone)."""
    workdir = tmp_path_factory.mktemp("sysv-image")
    with subreaper():
        tree = start(workdir, fresh_key())
        try:
            dump(tree.root, workdir / "img", DumpOptions(leave_running=True))
        finally:
            tree.stop()
            remove(int(tree.info["shmid"]))
    return workdir / "img"


def _sysv_vmas(process, change):
    """process with change(vma) for its first SysV attach's first VMA."""
    index = next(i for i, vma in enumerate(process.vmas) if vma.kind is VmaKind.SYSV)
    vmas = list(process.vmas)
    vmas[index] = change(vmas[index])
    return replace(process, vmas=tuple(vmas))


def _segment(tree, **changes):
    return replace(tree, shared_memory=(replace(tree.shared_memory[0], **changes),) + tree.shared_memory[1:])


@pytest.mark.parametrize("process_change, tree_change, field", [
    (None, lambda t: _segment(t, mode=0o4777), "shared_memory[0].mode"),
    (None, lambda t: _segment(t, id=1 << 31), "shared_memory[0].id"),
    (None, lambda t: _segment(t, sysv=replace(t.shared_memory[0].sysv, key=1 << 32)), "shared_memory[0].sysv.key"),
    (None, lambda t: _segment(t, sysv=None), "shared_memory[0].size"),  # not whole pages: no anonymous object
    (lambda p: _sysv_vmas(p, lambda v: replace(v, offset=4096)), None, ".offset"),
    (lambda p: _sysv_vmas(p, lambda v: replace(v, sysv_readonly=True, prot=3)), None, ".sysv_readonly"),
    (lambda p: replace(p, vmas=tuple(v for v in p.vmas if not (v.kind is VmaKind.SYSV and v.offset == 4096))),
     None, "stops at"),
])
def test_a_hostile_sysv_image_names_its_field(sysv_image, tmp_path, process_change, tree_change, field):
    directory = tmp_path / "img"
    shutil.copytree(sysv_image, directory)
    load(directory).close()  # the pristine image loads
    if process_change is not None:
        rewrite_process(directory, process_change)
    if tree_change is not None:
        rewrite_tree(directory, tree_change)
    with pytest.raises(ImageError) as refused:
        load(directory)
    assert field in str(refused.value) and "\n" not in str(refused.value)
