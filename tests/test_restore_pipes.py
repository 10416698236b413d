"""Pipes inside a tree: each made once with its capacity and the bytes in flight, its ends where they were.

A shell pipeline whose producer writes faster than its consumer reads
holds data in both pipes at the dump; after the restore the consumer's
count goes on with no number lost or repeated. A pipe also held by a
process outside the tree is refused, naming that process.
"""

import os

from restore_support import wait_for
from runtime.images import loader
from tree_support import descendants, start_tree, subreaper

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
