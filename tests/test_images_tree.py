"""The loader's checks of tree.json: a hostile tree (checksums refitted) is refused naming its field.

The image is a real tree dumped with --leave-running: a parent and a child
sharing an anonymous shared mapping, a pipe with bytes in it and a socket
pair, and a zombie child. Each change below breaks one thing a restore
relies on (a parent created before its child, a session it can make, data
that fits, a peer that names its socket back), and the loader names it.
"""

import shutil
from dataclasses import replace

import pytest

from restore_support import wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import ImageError
from runtime.images import codec, names as layout
from runtime.images.loader import load
from runtime.images.model import Inventory, Tree
from runtime.images import digest
from tree_support import descendants, proc_stat, start_tree, subreaper

PYTHON = "/usr/bin/python3"
PROGRAM = """
import mmap, os, socket, time
shared = mmap.mmap(-1, 8192)
shared[:5] = b"hello"
r, w = os.pipe()
os.write(w, b"bytes in flight")
a, b = socket.socketpair()
a.send(b"queued")
if os.fork() == 0:
    os._exit(3)
if os.fork() == 0:
    time.sleep(1000)
os.write(1, f"ready pid={os.getpid()}\\n".encode())
time.sleep(1000)
"""


@pytest.fixture(scope="module")
def tree_image(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tree-image")
    with subreaper():
        tree = start_tree([PYTHON, "-c", PROGRAM], workdir)
        try:
            wait_for(lambda: len(descendants(tree.root)) == 3 and any(
                proc_stat(pid).state == "Z" for pid in descendants(tree.root)), what="the child and the zombie")
            tree.pids = descendants(tree.root)
            dump(tree.root, workdir / "img", DumpOptions(leave_running=True))
        finally:
            tree.stop()
    return workdir / "img"


def rewrite_tree(directory, change) -> None:
    name = layout.TREE
    tree = codec.loads(Tree, (directory / name).read_bytes(), name)
    data = codec.dumps(change(tree))
    (directory / name).write_bytes(data)
    inventory = codec.loads(Inventory, (directory / layout.INVENTORY).read_bytes(), layout.INVENTORY)
    inventory = replace(inventory, files={**inventory.files, name: digest.of_bytes(data)})
    (directory / layout.INVENTORY).write_bytes(codec.dumps(inventory))


def _node(tree, index, **changes):
    nodes = list(tree.processes)
    nodes[index] = replace(nodes[index], **changes)
    return replace(tree, processes=tuple(nodes))


@pytest.mark.parametrize("change, field", [
    (lambda t: replace(t, processes=t.processes[::-1]), "processes[0].pid"),
    (lambda t: _node(t, 1, ppid=1), "processes[1].ppid"),
    (lambda t: replace(t, files=t.files + t.files[:1]) if t.files else replace(t, pipes=t.pipes + t.pipes),
     "id"),
    (lambda t: _node(t, 0, zombie_status=0), "processes[0].zombie_status"),
    (lambda t: _node(t, next(i for i, n in enumerate(t.processes) if n.zombie_status is not None),
                     zombie_status=0x7F), "zombie_status: 0x7f is not the wait status of a dead process"),
    (lambda t: _node(t, 1, sid=t.processes[1].pid + 1000), "processes[1]"),
    (lambda t: replace(t, shared_memory=(replace(t.shared_memory[0], extents=(
        replace(t.shared_memory[0].extents[0], offset=4096),)),)), "shared_memory[0].extents[0].offset"),
    (lambda t: replace(t, pipes=(replace(t.pipes[0], data=b"x" * (t.pipes[0].size + 1)),)), "pipes[0].data"),
    (lambda t: replace(t, pipes=(replace(t.pipes[0], packets=(len(t.pipes[0].data) + 1,)),)), "pipes[0].packets"),
    (lambda t: replace(t, pipes=(replace(t.pipes[0], data=b"x" * 8192, packets=(8192,)),)), "pipes[0].packets"),
    (lambda t: replace(t, pipes=(replace(t.pipes[0], external=True),)), "pipes[0].external"),
    (lambda t: replace(t, sockets=(replace(t.sockets[0], peer=12345),) + t.sockets[1:]), "sockets[0].peer"),
    (lambda t: replace(t, sockets=t.sockets[1:]), "files"),
])
def test_a_hostile_tree_names_its_field(tree_image, tmp_path, change, field):
    directory = tmp_path / "img"
    shutil.copytree(tree_image, directory)
    load(directory).close()  # the pristine image loads
    rewrite_tree(directory, change)
    with pytest.raises(ImageError) as refused:
        load(directory)
    assert field in str(refused.value) and "\n" not in str(refused.value)
