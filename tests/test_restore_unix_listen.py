"""A listening unix socket with connections accepted and one waiting in its backlog, made again as it was.

A server of the tree, bound to a path, has accepted two clients of the tree
and has a third client's connection waiting in its backlog when it is
dumped. After the restore its next accept returns the waiting one, all
three conversations go on (each client asks and gets answers, the first
two's questions from before the dump included), and a client from outside
the tree connects to the path. A waiting connection the restore could not
make again (its client outside the tree, or data already sent into it) is
refused naming the fd, and the tree goes on as if nothing happened. An
image whose waiting connections or outside names a restore could not make
is refused naming the field.
"""

import os
import socket
from dataclasses import replace

import pytest

from restore_support import lines, run_cli, wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError, ImageError
from runtime.images import loader, names
from runtime.images.loader import load
from test_images_tree import rewrite_tree
from tree_support import exists, start_tree

PYTHON = "/usr/bin/python3"

# argv: the path, then "quiet" or "eager" (the third client sends before the dump, which is refused).
SERVER = """
import os, socket, sys, time

def wait_go():
    while not os.path.exists("go"):
        time.sleep(0.01)

def client(number, server_pid, others):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    asked = []
    if number < 3 or sys.argv[2] == "eager":
        sock.send(f"round0-c{number}".encode())  # waits in the server's queue over the dump
        asked.append(0)
    if number == 3:
        pids = ",".join(str(p) for p in [server_pid, *others, os.getpid()])
        os.write(1, f"ready pids={pids}\\n".encode())
    wait_go()
    for round in range(2):
        if round not in asked:
            sock.send(f"round{round}-c{number}".encode())
        os.write(1, f"client c{number} got {sock.recv(100).decode()}\\n".encode())
    os._exit(0)

server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(4)
children, conns = [], []
for number in (1, 2, 3):
    child = os.fork()
    if child == 0:
        server.close()
        client(number, os.getppid(), children)
    children.append(child)
    if number < 3:
        conns.append(server.accept()[0])
wait_go()
conns.append(server.accept()[0])  # the one that waited in the backlog
for round in range(2):
    for conn in conns:
        conn.sendall(b"answer-to-" + conn.recv(100))
for child in children:
    os.waitpid(child, 0)
os.write(1, b"server served\\n")
while True:
    conn, _ = server.accept()
    conn.sendall(b"hello-" + conn.recv(100))
    conn.close()
"""


def test_a_server_with_two_clients_and_one_waiting_in_its_backlog_serves_all_three_after_restore(reaper, tmp_path):
    path = tmp_path / "server.sock"
    tree = start_tree([PYTHON, "-c", SERVER, str(path), "quiet"], tmp_path)
    try:
        tree.pids = [int(pid) for pid in tree.info["pids"].split(",")]
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            sockets = checkpoint.tree.sockets
        [listener] = [s for s in sockets if s.listening]
        assert len(listener.waiting) == 1 and sum(1 for s in sockets if s.listener == listener.id) == 2
        shown = run_cli("show", str(tree.images)).stdout
        assert "listening (backlog 4, 1 waiting)" in shown and f"waiting to be accepted by {listener.id}" in shown
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "server served" in tree.out.read_text(), what="the server to serve its three clients")
        got = sorted(" ".join(words) for words in lines(tree.out, "client"))
        assert got == [f"client c{n} got answer-to-round{r}-c{n}" for n in (1, 2, 3) for r in (0, 1)]
        with socket.socket(socket.AF_UNIX) as outsider:
            outsider.settimeout(5)
            outsider.connect(str(path))
            outsider.send(b"outsider")
            assert outsider.recv(100) == b"hello-outsider"
    finally:
        tree.stop()


def test_a_waiting_connection_whose_client_sent_data_is_refused_naming_the_client_and_left_running(
        reaper, tmp_path):
    """What the client sent waits in the listener's half, which only an accept reads: refused, not lost."""
    path = tmp_path / "server.sock"
    tree = start_tree([PYTHON, "-c", SERVER, str(path), "eager"], tmp_path)
    try:
        tree.pids = [int(pid) for pid in tree.info["pids"].split(",")]
        third = tree.pids[-1]
        with pytest.raises(DumpError, match=rf"^pid {third}: fd \d+ \(socket:\[\d+\]\): connected to the listening "
                                            r"socket:\[\d+\] of the tree, not yet accepted, with data sent into the "
                                            r"connection \(\d+ bytes of socket memory\) that only an accept could "
                                            r"read: dump again once it is accepted$"):
            dump(tree.root, tmp_path / "img", DumpOptions())
        assert all(exists(pid) for pid in tree.pids) and not (tmp_path / "img").exists()
        (tmp_path / "go").touch()  # unharmed: the server accepts the third and reads what it sent
        wait_for(lambda: "server served" in tree.out.read_text(), what="the server to serve its three clients")
        assert ["client", "c3", "got", "answer-to-round0-c3"] in lines(tree.out, "client")
    finally:
        tree.stop()


WAITED_ON = """
import os, socket, sys, time
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(4)
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
conn, _ = server.accept()
conn.sendall(b"served-" + conn.recv(100))
time.sleep(1000)
"""


def test_a_connection_from_outside_the_tree_not_yet_accepted_is_refused_and_the_server_accepts_it_after(
        reaper, tmp_path):
    path = tmp_path / "server.sock"
    tree = start_tree([PYTHON, "-c", WAITED_ON, str(path)], tmp_path)
    try:
        with socket.socket(socket.AF_UNIX) as outsider:
            outsider.settimeout(5)
            outsider.connect(str(path))
            outsider.send(b"me")
            client = os.fstat(outsider.fileno()).st_ino
            with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd \d+ \(socket:\[\d+\]\): a listening unix "
                                                rf"socket with a connection from socket {client} outside the tree "
                                                r"not yet accepted: dump again once it is accepted$"):
                dump(tree.root, tmp_path / "img", DumpOptions())
            assert exists(tree.root) and not (tmp_path / "img").exists()
            (tmp_path / "go").touch()
            assert outsider.recv(100) == b"served-me"
    finally:
        tree.stop()


HOSTILE = """
import os, socket, sys, time
server = socket.socket(socket.AF_UNIX)
server.bind("\\0revive-hostile-" + str(os.getpid()))
server.listen(2)
client = socket.socket(socket.AF_UNIX)
client.connect(server.getsockname())
log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
log.bind(sys.argv[2])
log.connect(sys.argv[1])
os.write(1, b"ready ok=1\\n")
time.sleep(1000)
"""


def _change_socket(tree, pick, **changes):
    return replace(tree, sockets=tuple(replace(s, **changes) if pick(s) else s for s in tree.sockets))


@pytest.mark.parametrize("change, field", [
    (lambda t: _change_socket(t, lambda s: s.listening, waiting=(12345,)), "waiting"),
    (lambda t: _change_socket(t, lambda s: s.listening, waiting=2 * next(s.waiting for s in t.sockets if s.waiting)),
     "waiting"),
    (lambda t: _change_socket(t, lambda s: s.listening, external=b"/elsewhere"), "external"),
    (lambda t: _change_socket(t, lambda s: s.type == socket.SOCK_DGRAM, external=b"relative"), "external"),
    (lambda t: _change_socket(t, lambda s: s.type == socket.SOCK_DGRAM, name=b""), "queue"),
])
def test_a_hostile_waiting_connection_or_outside_name_is_refused_naming_the_field(change, field, reaper, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as outside:
        outside.bind(str(tmp_path / "log.sock"))
        tree = start_tree([PYTHON, "-c", HOSTILE, str(tmp_path / "log.sock"), str(tmp_path / "own.sock")], tmp_path)
        try:
            outside.sendto(b"queued", str(tmp_path / "own.sock"))
            dump(tree.root, tree.images, DumpOptions(leave_running=True, ext_unix_sk=True))
        finally:
            tree.stop()
    load(tree.images).close()  # the pristine image loads
    rewrite_tree(tree.images, change)
    with pytest.raises(ImageError, match=rf"^{names.TREE}: sockets\[\d+\]\.{field}: [^\n]*$"):
        load(tree.images)
