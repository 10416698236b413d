"""Pipes inside a tree: each made once with its capacity and the bytes in flight, its ends where they were.

A shell pipeline whose producer writes faster than its consumer reads
holds data in both pipes at the dump; after the restore the consumer's
count goes on with no number lost or repeated. A pipe also held by a
process outside the tree (here the test) is refused, naming it and
--external; dumped with --external pipe:[INODE], it is restored onto the
pipe the restore's caller hands in (--inherit-fd), and refused without it.
A packet-mode pipe keeps each packet whole.
"""

import os
import select

from restore_support import run_cli, wait_for
from runtime.images import loader
from tree_support import descendants, exists, reap, start_tree, subreaper

PYTHON = "/usr/bin/python3"
PRODUCER = "import itertools, sys\nfor n in itertools.count():\n    sys.stdout.write(f'{n}\\n')\n"
CONSUMER = ("import sys, time\nwith open('consumed.txt', 'w', buffering=1) as out:\n"
            "    for line in sys.stdin:\n        out.write(line)\n        time.sleep(0.001)\n")
PIPELINE = f'{PYTHON} -c "$0" | cat | {PYTHON} -c "$1"'


def consumed(workdir) -> list[int]:
    text = (workdir / "consumed.txt").read_text()
    return [int(line) for line in text.splitlines()[:-1]]  # the last line may be half written


def test_a_pipeline_restored_with_data_in_its_pipes_loses_and_repeats_nothing(tmp_path):
    with subreaper():
        tree = start_tree(["bash", "-c", PIPELINE, PRODUCER, CONSUMER], tmp_path, ready=False)
        try:
            wait_for(lambda: len(descendants(tree.root)) == 4 and (tmp_path / "consumed.txt").exists()
                     and len(consumed(tmp_path)) > 100, what="the pipeline to flow")
            tree.pids = descendants(tree.root)
            tree.dump()
            with loader.load(tree.images) as checkpoint:
                pipes = checkpoint.tree.pipes
            assert len(pipes) == 2 and all(len(p.data) > 0 for p in pipes), "the pipes held nothing at the dump"
            at_dump = len(consumed(tmp_path))
            tree.restore()
            wait_for(lambda: len(consumed(tmp_path)) > at_dump + 2000, what="the consumer to go on")
            numbers = consumed(tmp_path)
            assert numbers == list(range(len(numbers))), "a number was lost or repeated"
            assert os.getsid(tree.pids[-1]) == tree.root
        finally:
            tree.pids = sorted(set(tree.pids) | set(descendants(tree.root)))
            tree.stop()


FIFO_PROGRAM = """
import os, sys, time
path = sys.argv[1]
os.mkfifo(path)
reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
writer = os.open(path, os.O_WRONLY)
os.write(writer, b"in flight at the dump\\n")
child = os.fork()
if child == 0:
    os.close(writer)
    os.set_blocking(reader, True)
    while not os.path.exists("go"):
        time.sleep(0.01)
    os.write(1, b"child read " + os.read(reader, 100))
    os._exit(0)
os.write(1, f"ready child={child}\\n".encode())
os.waitpid(child, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_a_fifo_held_by_parent_and_child_comes_back_by_path_with_its_bytes(tmp_path):
    """The FIFO is reopened by its path (each open its own file), and what was written before the dump is read after."""
    fifo = tmp_path / "the.fifo"
    with subreaper():
        tree = start_tree([PYTHON, "-c", FIFO_PROGRAM, str(fifo)], tmp_path)
        try:
            child = int(tree.info["child"])
            tree.pids = [tree.root, child]
            tree.dump()
            with loader.load(tree.images) as checkpoint:
                (made,) = checkpoint.tree.pipes
            assert (made.path, made.data) == (str(fifo), b"in flight at the dump\n")
            tree.restore()
            assert os.readlink(f"/proc/{child}/fd/3") == str(fifo)
            (tmp_path / "go").touch()
            wait_for(lambda: "done" in tree.out.read_text(), what="the child to read and exit")
            assert "child read in flight at the dump" in tree.out.read_text()
        finally:
            tree.stop()


TALKER = """
import os, sys, time
fd = int(sys.argv[1])
os.set_blocking(fd, False)
os.write(1, b"ready talking=1\\n")
for n in range(1000000):
    os.write(fd, f"{n}\\n".encode())
    time.sleep(0.01)
"""
O_NONBLOCK = 0o4000


def read_numbers(fd: int, at_least: int = 1, until_eof: bool = False) -> list[int]:
    """Whole lines read from the pipe fd until there are at_least numbers (or until its end)."""
    data = b""
    while until_eof or data.count(b"\n") < at_least:
        ready, _, _ = select.select([fd], [], [], 10)
        assert ready, f"no line within 10 s after {data[-40:]!r}"
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return [int(line) for line in data.split(b"\n")[:-1]]


def test_a_pipe_to_a_process_outside_is_refused_then_dumped_external_and_restored_on_the_callers_pipe(reaper,
                                                                                                       tmp_path):
    """The test holds the read end; the refusal names the pipe; restored, the talker goes on on a new pipe."""
    theirs, ours = os.pipe()
    tree = start_tree([PYTHON, "-c", TALKER, str(ours)], tmp_path, pass_fds=(ours,))
    os.close(ours)
    images = tmp_path / "images"
    new_read, new_write = os.pipe()
    restored = None
    try:
        read_numbers(theirs, 3)
        name = f"pipe:[{os.fstat(theirs).st_ino}]"
        refused = run_cli("dump", "-t", str(tree.root), "-D", str(images))
        assert refused.returncode == 1
        assert f"fd {ours} ({name}): it is also held by pid {os.getpid()}" in refused.stderr
        assert f"--external {name}" in refused.stderr
        read_numbers(theirs, 5)  # unharmed: it goes on talking
        dumped = run_cli("dump", "-t", str(tree.root), "-D", str(images), "--external", name)
        assert dumped.returncode == 0, dumped.stderr
        tree.reap_killed()
        said = read_numbers(theirs, until_eof=True)  # everything it wrote before the dump, then its end closed
        with loader.load(images) as checkpoint:
            (external,) = checkpoint.tree.pipes
        assert external.external and external.data == b""
        assert f"pipe {external.id}: capacity 64K, external" in run_cli("show", str(images)).stdout
        assert run_cli("restore", "-D", str(images), "--inherit-fd", f"fd[x]:{name}").returncode == 2

        missing = run_cli("restore", "-D", str(images), "-d")
        assert missing.returncode == 1
        assert f"is the write end of {name}" in missing.stderr and f"--inherit-fd fd[N]:{name}" in missing.stderr
        wrong_end = run_cli("restore", "-D", str(images), "-d", "--inherit-fd", f"fd[{new_read}]:{name}",
                            pass_fds=(new_read,))
        assert wrong_end.returncode == 1 and "gives no write end" in wrong_end.stderr, wrong_end.stderr
        assert not exists(tree.root), "a refused restore left a process behind"

        done = run_cli("restore", "-D", str(images), "-d", "--inherit-fd", f"fd[{new_write}]:{name}",
                       pass_fds=(new_write,))
        assert done.returncode == 0, done.stderr
        restored = tree.root
        os.close(new_write)
        new_write = None
        after = read_numbers(new_read, 20)
        assert after[:20] == list(range(said[-1] + 1, said[-1] + 21)), "the count did not go on on the new pipe"
        assert os.readlink(f"/proc/{restored}/fd/{ours}") == f"pipe:[{os.fstat(new_read).st_ino}]"
        with open(f"/proc/{restored}/fdinfo/{ours}") as info:
            flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
        assert flags & O_NONBLOCK, "the end lost the O_NONBLOCK it had"
    finally:
        tree.stop()
        if restored:
            reap([restored])
        for fd in (theirs, new_read, new_write):
            if fd is not None:
                os.close(fd)


PACKETS = """
import os, time
read_end, write_end = os.pipe2(os.O_DIRECT)
for packet in (b"a" * 5, b"b" * 200, b"c" * 3000):
    os.write(write_end, packet)
os.write(1, b"ready packets=3\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
os.set_blocking(read_end, False)
for _ in range(3):
    got = os.read(read_end, 65536)
    os.write(1, f"read {len(got)} {sorted(set(got))}\\n".encode())
try:
    os.read(read_end, 65536)
except BlockingIOError:
    os.write(1, b"then nothing\\n")
os.write(write_end, b"x" * 10)
os.write(write_end, b"y" * 20)
os.write(1, f"new {len(os.read(read_end, 65536))}\\n".encode())
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_a_packet_mode_pipe_gives_back_each_packet_whole_after_restore(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", PACKETS], tmp_path)
    try:
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            (made,) = checkpoint.tree.pipes
        assert made.packets == (5, 200, 3000)
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "done" in tree.out.read_text(), what="the packets to be read")
        said = tree.out.read_text().splitlines()[1:]
        assert said == ["read 5 [97]", "read 200 [98]", "read 3000 [99]", "then nothing", "new 10", "done"]
    finally:
        tree.stop()
