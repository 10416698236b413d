"""Unix socket pairs inside a tree: made once, queues (and message boundaries) and shutdowns kept, refusals named.

A parent and its child talk over socketpairs of every type; what one sent
before the dump and the other had not read yet is read after the restore,
in order, each datagram and seqpacket whole. A socket the restore could not
make as it was (bound to a relative name, connected to an unnamed socket
outside the tree, carrying descriptors in its queue) is refused naming the
fd, and goes on as if nothing happened (the descriptor in flight still
arrives).
"""

import os
import socket

import pytest

from restore_support import lines, wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError
from runtime.images import loader
from tree_support import exists, start_tree

PYTHON = "/usr/bin/python3"

PAIRS = """
import os, socket, sys, time
pairs = {kind: socket.socketpair(socket.AF_UNIX, getattr(socket, kind))
         for kind in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET")}
for kind, (parent_end, child_end) in pairs.items():
    parent_end.send(f"{kind} one".encode())
    parent_end.send(f"{kind} two".encode())
    child_end.send(f"{kind} back".encode())
pairs["SOCK_STREAM"][0].shutdown(socket.SHUT_WR)
child = os.fork()
if child == 0:
    for parent_end, _ in pairs.values():
        parent_end.close()
    while not os.path.exists("go"):
        time.sleep(0.01)
    for kind, (_, end) in pairs.items():
        if kind == "SOCK_STREAM":
            got = [end.recv(100), end.recv(100)]  # all the bytes, then EOF: the parent shut its side
        else:
            got = [end.recv(100), end.recv(100)]
        os.write(1, f"child {kind} {got!r}\\n".encode())
    os._exit(0)
for _, child_end in pairs.values():
    child_end.close()
os.write(1, f"ready child={child}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
for kind, (end, _) in pairs.items():
    os.write(1, f"parent {kind} {end.recv(100)!r}\\n".encode())
os.waitpid(child, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_socketpairs_of_every_type_keep_their_queues_boundaries_and_shutdowns(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", PAIRS], tmp_path)
    try:
        tree.pids = [tree.root, int(tree.info["child"])]
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            sockets = checkpoint.tree.sockets
        assert len(sockets) == 6 and sum(len(s.queue) for s in sockets) == 8  # a stream's queue is one
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "done" in tree.out.read_text(), what="both to read")
        said = {tuple(words[:2]): " ".join(words[2:]) for words in lines(tree.out, "child") + lines(tree.out, "parent")}
        assert said[("child", "SOCK_STREAM")] == "[b'SOCK_STREAM oneSOCK_STREAM two', b'']"
        for kind in ("SOCK_DGRAM", "SOCK_SEQPACKET"):
            assert said[("child", kind)] == f"[b'{kind} one', b'{kind} two']"
        for kind in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET"):
            assert said[("parent", kind)] == f"b'{kind} back'"
    finally:
        tree.stop()


REFUSED = {
    "relative": "s = socket.socket(socket.AF_UNIX); s.bind('sock'); s.listen(4)",
}


@pytest.mark.parametrize("case, message", [
    ("relative", r"fd \d+ \(socket:\[\d+\]\): bound to the relative path b'sock', which names no file once the "
                 r"working directory changed: not supported"),
])
def test_unix_sockets_the_restore_cannot_make_are_refused_and_left_running(case, message, reaper, tmp_path):
    program = f"import os, socket, time\n{REFUSED[case]}\nos.write(1, b'ready ok=1\\n')\ntime.sleep(1000)\n"
    tree = start_tree([PYTHON, "-c", program], tmp_path)
    try:
        with pytest.raises(DumpError, match=rf"^pid {tree.root}: {message}"):
            dump(tree.root, tmp_path / "img", DumpOptions())
        assert exists(tree.root) and not (tmp_path / "img").exists()
    finally:
        tree.stop()


@pytest.mark.parametrize("ext_unix_sk", [False, True])
def test_a_socket_connected_to_an_unnamed_one_outside_the_tree_is_refused_even_with_ext_unix_sk(
        ext_unix_sk, reaper, tmp_path):
    """No name to connect to again: --ext-unix-sk cannot help."""
    ours, theirs = socket.socketpair()
    try:
        program = ("import os, socket, time\nos.write(1, b'ready ok=1\\n')\n"
                   f"s = socket.socket(fileno={theirs.fileno()})\n"
                   "while not os.path.exists('go'):\n    time.sleep(0.01)\ns.send(b'still here')\ntime.sleep(1000)\n")
        tree = start_tree([PYTHON, "-c", program], tmp_path, pass_fds=(theirs.fileno(),))
        try:
            with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd {theirs.fileno()} \(socket:\[\d+\]\): "
                                                rf"connected to socket {os.fstat(ours.fileno()).st_ino} outside the "
                                                r"tree, which has no name to connect to again: not supported \(not "
                                                r"even with --ext-unix-sk\)$"):
                dump(tree.root, tmp_path / "img", DumpOptions(ext_unix_sk=ext_unix_sk))
            assert exists(tree.root) and not (tmp_path / "img").exists()
            (tmp_path / "go").touch()
            ours.settimeout(5)
            assert ours.recv(100) == b"still here"
        finally:
            tree.stop()
    finally:
        ours.close()
        theirs.close()


IN_FLIGHT = """
import array, os, socket, time
sender, receiver = socket.socketpair()
r, w = os.pipe()
os.write(w, b"through the passed fd")
sender.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
os.close(r)
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
_, fds, _, _ = socket.recv_fds(receiver, 10, 1)
os.write(1, b"received " + os.read(fds[0], 100).replace(b" ", b"-") + b"\\n")
time.sleep(1000)
"""


def test_a_descriptor_in_flight_is_refused_and_stays_in_the_queue_for_the_process(reaper, tmp_path):
    """The peek that finds it takes a copy into the runtime, which it closes; the message stays queued."""
    tree = start_tree([PYTHON, "-c", IN_FLIGHT], tmp_path)
    try:
        ours = set(os.listdir("/proc/self/fd"))
        with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd \d+ \(socket:\[\d+\]\): descriptors in "
                                            r"flight in its queue \(SCM_RIGHTS\): not supported yet$"):
            dump(tree.root, tmp_path / "img", DumpOptions())
        assert exists(tree.root) and not (tmp_path / "img").exists()
        assert set(os.listdir("/proc/self/fd")) == ours
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "received"), what="the descriptor to arrive")
        assert lines(tree.out, "received") == [["received", "through-the-passed-fd"]]
    finally:
        tree.stop()


INBOX = """
import os, socket, sys, time
inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
inbox.bind(sys.argv[1])
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
inbox.setblocking(False)
for _ in range(3):
    os.write(1, f"inbox {len(inbox.recv(1 << 16))}\\n".encode())
os.write(1, b"inbox done\\n")
time.sleep(1000)
"""


def test_datagrams_queued_on_a_bound_socket_without_a_peer_keep_their_boundaries(reaper, tmp_path):
    """Sent from outside the tree to its name; sent to it again at restore, each datagram whole."""
    path = tmp_path / "inbox.sock"
    tree = start_tree([PYTHON, "-c", INBOX, str(path)], tmp_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for size in (1, 3000, 40):
                sender.sendto(b"d" * size, str(path))
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            [sock] = checkpoint.tree.sockets
        assert [len(m) for m in sock.queue] == [1, 3000, 40] and not sock.peer
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "inbox done" in tree.out.read_text(), what="the inbox to be read")
        assert lines(tree.out, "inbox") == [["inbox", "1"], ["inbox", "3000"], ["inbox", "40"], ["inbox", "done"]]
    finally:
        tree.stop()


SERVER = """
import os, socket, sys, time
servers = []
for name in (sys.argv[1], "\\0revive-test-" + str(os.getpid())):
    s = socket.socket(socket.AF_UNIX)
    s.bind(name)
    s.listen(7)
    servers.append(s)
os.chmod(sys.argv[1], 0o600)
os.write(1, f"ready abstract=revive-test-{os.getpid()}\\n".encode())
while True:
    for s in servers:
        s.settimeout(0.05)
        try:
            conn, _ = s.accept()
        except socket.timeout:
            continue
        conn.sendall(b"hello from " + str(s.getsockname()).encode())
        conn.close()
"""


def test_listening_sockets_bound_to_a_path_and_an_abstract_name_serve_after_restore(reaper, tmp_path):
    """Bound again (the stale socket file replaced, its mode kept) and listening: new clients are served."""
    path = tmp_path / "server.sock"
    tree = start_tree([PYTHON, "-c", SERVER, str(path)], tmp_path)
    try:
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            assert {s.listening for s in checkpoint.tree.sockets} == {True}
        assert path.exists()  # what the killed server left behind
        tree.restore()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        for name in (str(path), "\0" + tree.info["abstract"]):
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(5)
                client.connect(name)
                assert client.recv(100).startswith(b"hello from ")
    finally:
        tree.stop()


ACCEPTED = """
import os, socket, sys, time
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(4)
child = os.fork()
if child == 0:
    server.close()
    client = socket.socket(socket.AF_UNIX)
    client.connect(sys.argv[1])
    client.send(b"question")
    while not os.path.exists("go"):
        time.sleep(0.01)
    os.write(1, b"client got " + client.recv(100) + b"\\n")
    os._exit(0)
conn, _ = server.accept()
conn.send(b"answer")
os.write(1, f"ready child={child}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
os.write(1, b"server got " + conn.recv(100) + b"\\n")
os.waitpid(child, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_a_connection_accepted_from_a_listening_socket_of_the_tree_comes_back_with_its_queues(reaper, tmp_path):
    """The listener is bound and listening again, and the connection made again by a connect and an accept."""
    tree = start_tree([PYTHON, "-c", ACCEPTED, str(tmp_path / "server.sock")], tmp_path)
    try:
        tree.pids = [tree.root, int(tree.info["child"])]
        tree.dump()
        with loader.load(tree.images) as checkpoint:
            assert sorted(bool(s.listener) for s in checkpoint.tree.sockets) == [False, False, True]
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "done" in tree.out.read_text(), what="both to read")
        assert lines(tree.out, "server") == [["server", "got", "question"]]
        assert lines(tree.out, "client") == [["client", "got", "answer"]]
    finally:
        tree.stop()
