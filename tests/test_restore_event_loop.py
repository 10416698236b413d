"""Event loops: eventfd counters and epoll interest lists come back, so asyncio programs run on.

An asyncio program holds an epoll instance, a socketpair (its self-pipe)
and whatever it waits on; after the restore its coroutines carry on where
they were. An eventfd keeps its count and semaphore mode; an epoll
instance watches the same fds with the same masks and data, and a file
ready at the dump is reported ready again.
"""

import fcntl
import os
import signal
import struct
import time

import pytest

from restore_support import lines, wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError
from tree_support import descendants, exists, start_tree

PYTHON = "/usr/bin/python3"

ASYNCIO = """
import asyncio, os
async def tick():
    for n in range(100000):
        os.write(1, f"tick {n}\\n".encode())
        await asyncio.sleep(0.01)
async def echo():
    cat = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    for n in range(100000):
        cat.stdin.write(f"{n}\\n".encode())
        await cat.stdin.drain()
        os.write(1, f"echo {int(await cat.stdout.readline())}\\n".encode())
        await asyncio.sleep(0.02)
def later(loop, n):
    os.write(1, f"later {n}\\n".encode())
    loop.call_later(0.05, later, loop, n + 1)
async def main():
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, later, loop, 0)
    tasks = [asyncio.create_task(tick()), asyncio.create_task(echo())]
    os.write(1, f"ready pid={os.getpid()}\\n".encode())
    await asyncio.gather(*tasks)
asyncio.run(main())
"""

EVENTS = """
import os, select, time
counter = os.eventfd(5, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
r, w = os.pipe()
os.write(w, b"ready to read")
poll = select.epoll()
poll.register(r, select.EPOLLIN)
os.write(1, f"ready pid={os.getpid()} reader={r}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
takes = 0
while True:
    try:
        takes += os.eventfd_read(counter)
    except BlockingIOError:
        break
os.write(1, f"counter {takes}\\n".encode())
os.write(1, f"ready-fds {poll.poll(0)}\\n".encode())
time.sleep(1000)
"""


def test_an_asyncio_program_restored_runs_its_coroutines_on(reaper, tmp_path):
    """A periodic task, a conversation with a `cat` subprocess over pipes and a call_later chain, each at its rate."""
    tree = start_tree([PYTHON, "-c", ASYNCIO], tmp_path)
    try:
        wait_for(lambda: all(len(lines(tree.out, tag)) > 3 for tag in ("tick", "echo", "later")), what="the loop")
        tree.dump()
        at_dump = {tag: len(lines(tree.out, tag)) for tag in ("tick", "echo", "later")}
        tree.restore()
        wait_for(lambda: all(len(lines(tree.out, tag)) > at_dump[tag] + 2 for tag in at_dump), what="the loop on")
        counted = {tag: len(lines(tree.out, tag)) for tag in at_dump}
        started = time.monotonic()
        time.sleep(1)
        elapsed = time.monotonic() - started
        for tag, period in (("tick", 0.01), ("echo", 0.02), ("later", 0.05)):
            numbers = [int(words[1]) for words in lines(tree.out, tag)]
            assert numbers == list(range(len(numbers))), f"{tag}: every one once, in order, across the restore"
            # Never faster than its period, and not stalled (a lenient floor: the machine may be loaded).
            assert elapsed / period / 4 <= len(numbers) - counted[tag] <= elapsed / period + 2, tag
    finally:
        tree.stop()


def test_an_eventfd_keeps_its_count_and_an_epoll_instance_its_ready_files(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", EVENTS], tmp_path)
    try:
        tree.dump()
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "ready-fds"), what="the counts")
        assert lines(tree.out, "counter") == [["counter", "5"]]  # five takes of 1: a semaphore of 5
        reader = tree.info["reader"]
        assert " ".join(lines(tree.out, "ready-fds")[0][1:]) == f"[({reader}, 1)]"  # the pipe's read end: readable
    finally:
        tree.stop()


SHARED_EPOLL = """
import os, select, time
poll = select.epoll()
if os.fork() == 0:
    time.sleep(1000)
os.write(1, f"ready pid={os.getpid()}\\n".encode())
time.sleep(1000)
"""


def test_an_epoll_instance_two_processes_share_is_refused_and_left_running(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SHARED_EPOLL], tmp_path)
    try:
        with pytest.raises(DumpError, match=r"fd 3 \(epoll\): one open file with process \d+'s fd 3: "
                                            r"not supported yet"):
            dump(tree.root, tmp_path / "img", DumpOptions())
        assert exists(tree.root)
    finally:
        tree.pids = descendants(tree.root)
        tree.stop()


TIMERS = """
import ctypes, os, signal, struct, time
libc = ctypes.CDLL(None, use_errno=True)
class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
class Itimerspec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]
timer = libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK)
libc.timerfd_settime(timer, 0, ctypes.byref(Itimerspec(Timespec(0, 20_000_000), Timespec(0, 20_000_000))), None)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
mask = ctypes.c_uint64(1 << (signal.SIGUSR1 - 1))
reader = libc.syscall(289, -1, ctypes.byref(mask), 8, 0)
os.write(1, f"ready pid={os.getpid()} timer={timer} reader={reader}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
time.sleep(0.1)  # 5 more expirations at least
expired = struct.unpack("<Q", os.read(timer, 8))[0]
os.write(1, f"expired {expired}\\n".encode())
os.write(1, f"signal {struct.unpack_from('<I', os.read(reader, 128))[0]}\\n".encode())
time.sleep(1000)
"""


def test_a_timerfd_keeps_firing_with_its_unread_expirations_and_a_signalfd_reads_signals_sent_after(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", TIMERS], tmp_path)
    try:
        time.sleep(0.3)  # about 15 expirations, none read
        tree.dump()
        tree.restore()
        os.kill(tree.root, signal.SIGUSR1)
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "signal"), what="the reads")
        expired = int(lines(tree.out, "expired")[0][1])
        assert expired >= 15 + 5, "the expirations before the dump were lost"
        assert lines(tree.out, "signal") == [["signal", str(int(signal.SIGUSR1))]]
    finally:
        tree.stop()


MEMFD = """
import fcntl, mmap, os, time
fd = os.memfd_create("state", os.MFD_ALLOW_SEALING)
os.write(fd, b"kept in a memfd " * 300)
view = mmap.mmap(fd, 4096)
fcntl.fcntl(fd, 1033, 2)  # F_ADD_SEALS F_SEAL_SHRINK
child = os.fork()
if child == 0:
    while not os.path.exists("go"):
        time.sleep(0.01)
    os.pwrite(fd, b"WRITTEN BY CHILD", 0)
    os._exit(0)
os.write(1, f"ready pid={os.getpid()} fd={fd} child={child}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
os.waitpid(child, 0)
os.write(1, f"mapped {view[:16]!r} seals {fcntl.fcntl(fd, 1034)} at {os.lseek(fd, 0, os.SEEK_CUR)}\\n".encode())
time.sleep(1000)
"""


def test_a_memfd_held_by_parent_and_child_and_mapped_is_one_object_with_its_data_and_seals(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", MEMFD], tmp_path)
    try:
        fd, child = tree.info["fd"], int(tree.info["child"])
        tree.pids = [tree.root, child]
        tree.dump()
        tree.restore()
        assert os.readlink(f"/proc/{tree.root}/fd/{fd}") == "/memfd:state (deleted)"
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "mapped"), what="the parent to look")
        # The child's write through its fd shows in the parent's mapping: one object; the seal and offset kept.
        assert lines(tree.out, "mapped") == [["mapped", "b'WRITTEN", "BY", "CHILD'", "seals", "2", "at", "4800"]]
    finally:
        tree.stop()


DELETED = """
import os, time
fd = os.open("scratch", os.O_RDWR | os.O_CREAT, 0o640)
os.write(fd, b"contents of a deleted file\\n" * 100)
os.unlink("scratch")
os.lseek(fd, 27, os.SEEK_SET)
os.write(1, f"ready pid={os.getpid()} fd={fd}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
st = os.fstat(fd)
os.write(1, f"file {st.st_nlink} {st.st_size} {oct(st.st_mode & 0o777)} {os.read(fd, 8)!r}\\n".encode())
time.sleep(1000)
"""


def test_a_deleted_file_held_open_comes_back_deleted_with_its_contents_size_mode_and_offset(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", DELETED], tmp_path)
    try:
        tree.dump()
        tree.restore()
        assert os.readlink(f"/proc/{tree.root}/fd/{tree.info['fd']}") == f"{tmp_path}/scratch (deleted)"
        assert not (tmp_path / "scratch").exists()
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "file"), what="the file's state")
        assert lines(tree.out, "file") == [["file", "0", "2700", "0o640", "b'contents'"]]
    finally:
        tree.stop()


def test_a_deleted_file_beyond_the_ghost_limit_is_refused(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", DELETED], tmp_path)
    try:
        with pytest.raises(DumpError, match=r"scratch \(deleted\): a deleted file of 2700 bytes, more than the ghost "
                                            r"limit \(1024; dump with a larger --ghost-limit to keep it\)"):
            dump(tree.root, tmp_path / "img", DumpOptions(ghost_limit=1024))
        assert exists(tree.root) and not (tmp_path / "img").exists()
    finally:
        tree.stop()


LOCKS = """
import fcntl, os, struct, time
held = {}
for name in ("flock", "posix", "ofd"):
    held[name] = os.open(name, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(held["flock"], fcntl.LOCK_EX)
fcntl.lockf(held["posix"], fcntl.LOCK_EX, 10, 5)
fcntl.fcntl(held["ofd"], 37, struct.pack("hhqqi", fcntl.F_RDLCK, 0, 0, 0, 0))
os.write(1, f"ready pid={os.getpid()}\\n".encode())
time.sleep(1000)
"""


def blocked(path, take) -> bool:
    """Whether another process (a fork of ours) is refused the lock take() asks for on path."""
    child = os.fork()
    if child == 0:
        fd = os.open(path, os.O_RDWR)
        try:
            take(fd)
        except BlockingIOError:
            os._exit(1)
        except OSError:
            os._exit(2)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 1


def test_file_locks_are_taken_again_so_another_process_is_still_refused_them(reaper, tmp_path):
    """flock, POSIX (the process's, on a range) and OFD locks: held again before the process runs."""
    tree = start_tree([PYTHON, "-c", LOCKS], tmp_path)
    try:
        tree.dump()
        tree.restore()
        assert blocked(tmp_path / "flock", lambda fd: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB))
        assert blocked(tmp_path / "posix", lambda fd: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 12))
        assert not blocked(tmp_path / "posix", lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0))
        assert blocked(tmp_path / "ofd", lambda fd: fcntl.fcntl(fd, 37, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0,
                                                                                      0)))
    finally:
        tree.stop()


INOTIFY = """
import ctypes, os, struct, time
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir("watched")
os.mkdir("dropped")
os.mkdir("again")
fd = libc.inotify_init1(0)
first = libc.inotify_add_watch(fd, b"watched", 0x100)  # IN_CREATE
dropped = libc.inotify_add_watch(fd, b"dropped", 0x100)
libc.inotify_rm_watch(fd, dropped)
os.read(fd, 4096)  # its IN_IGNORED
again = libc.inotify_add_watch(fd, b"again", 0x200)  # IN_DELETE
os.write(1, f"ready pid={os.getpid()} watches={first},{again}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
data = os.read(fd, 4096)
events = []
while data:
    wd, mask, cookie, length = struct.unpack_from("iIII", data)
    events.append(f"{wd}:{mask:#x}:{data[16:16 + length].rstrip(bytes(1)).decode()}")
    data = data[16 + length:]
os.write(1, f"events {' '.join(events)}\\n".encode())
time.sleep(1000)
"""


def test_an_inotify_instance_keeps_its_watches_under_their_descriptors(reaper, tmp_path):
    """Watch 1 and watch 3 (2 was removed): after restore, events come with the same descriptors, and no
    IN_IGNORED of the descriptor the restore skipped."""
    tree = start_tree([PYTHON, "-c", INOTIFY], tmp_path)
    try:
        assert tree.info["watches"] == "1,3"
        tree.dump()
        tree.restore()
        (tmp_path / "watched" / "new").touch()
        (tmp_path / "again" / "gone").touch()  # created unwatched (watch 3 is for deletions) ...
        (tmp_path / "again" / "gone").unlink()  # ... and deleted
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "events"), what="the events")
        assert lines(tree.out, "events") == [["events", "1:0x100:new", "3:0x200:gone"]]
    finally:
        tree.stop()


SHARED_LOCKS = """
import fcntl, os, time
fd = os.open("locked", os.O_RDWR | os.O_CREAT, 0o600)
child = os.fork()
if child == 0:
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 20)
    time.sleep(1000)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
time.sleep(0.2)
os.write(1, f"ready pid={os.getpid()} child={child}\\n".encode())
time.sleep(1000)
"""


def test_posix_locks_two_processes_hold_through_one_open_file_are_each_taken_again_by_their_owner(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SHARED_LOCKS], tmp_path)
    try:
        tree.pids = [tree.root, int(tree.info["child"])]
        tree.dump()
        tree.restore()
        locked = tmp_path / "locked"
        assert blocked(locked, lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 5))  # the parent's
        assert blocked(locked, lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 25))  # the child's
        assert not blocked(locked, lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 15))
        with open("/proc/locks") as f:
            owners = {int(line.split()[4]) for line in f if "POSIX" in line and line.split()[5].endswith(
                f":{os.stat(locked).st_ino}")}
        assert owners == set(tree.pids)
    finally:
        tree.stop()
