"""Unix sockets connected to a named socket outside the tree: refused, or with --ext-unix-sk connected again.

The outside peer is the test's own socket. A datagram socket of the tree
bound to a name and connected to the test's bound datagram socket (as a
logger to /dev/log) has datagrams the test sent it queued: without the flag
the dump is refused naming the peer's path and the tree goes on untouched;
with it the restored process reads the same datagrams and its next one
reaches the test's socket. A stream client connected to the test's server
comes back as a new connection the server accepts (dumped through the
command line's --ext-unix-sk).
"""

import contextlib
import os
import socket

import pytest

from restore_support import lines, run_cli, wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError, RestoreError
from runtime.images import loader
from runtime import restore
from tree_support import exists, start_tree

PYTHON = "/usr/bin/python3"

# argv: its own name, the outside socket's path.
LOGGER = """
import os, socket, sys, time
log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
log.bind(sys.argv[1])
log.connect(sys.argv[2])
log.send(b"before")
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
log.setblocking(False)
for _ in range(2):
    os.write(1, b"logger read " + log.recv(100) + b"\\n")
log.send(b"after")
os.write(1, b"logger done\\n")
time.sleep(1000)
"""


@pytest.mark.parametrize("ext_unix_sk", [False, True], ids=["refused", "restored"])
def test_a_datagram_socket_connected_outside_keeps_its_queue_and_reaches_the_peer(ext_unix_sk, reaper, tmp_path):
    outside_path, own_path = tmp_path / "log.sock", tmp_path / "logger.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as outside:
        outside.bind(str(outside_path))
        outside.settimeout(5)
        tree = start_tree([PYTHON, "-c", LOGGER, str(own_path), str(outside_path)], tmp_path)
        try:
            assert outside.recv(100) == b"before"
            for message in (b"queued one", b"queued two"):
                outside.sendto(message, str(own_path))
            if ext_unix_sk:
                dump(tree.root, tree.images, DumpOptions(ext_unix_sk=True))
                tree.reap_killed()
                with loader.load(tree.images) as checkpoint:
                    [sock] = checkpoint.tree.sockets
                assert sock.external == os.fsencode(outside_path) and len(sock.queue) == 2
                tree.restore()
            else:
                with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd \d+ \(socket:\[\d+\]\): connected to "
                                                    rf"socket \d+ \({os.fsencode(outside_path)!r}\) outside the tree: "
                                                    r"not supported without --ext-unix-sk, with which the restore "
                                                    r"connects it to that name again$"):
                    dump(tree.root, tree.images, DumpOptions())
                assert exists(tree.root) and not tree.images.exists()
            (tmp_path / "go").touch()
            wait_for(lambda: "logger done" in tree.out.read_text(), what="the logger to read and send")
            assert lines(tree.out, "logger") == [["logger", "read", "queued", "one"], ["logger", "read", "queued",
                                                                                        "two"], ["logger", "done"]]
            assert outside.recv(100) == b"after"
        finally:
            tree.stop()


@contextlib.contextmanager
def listening_outside(path):
    """A stream server of the test's own, outside any dumped tree, listening at path."""
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(2)
        server.settimeout(5)
        yield server


CLIENT = """
import os, socket, sys, time
client = socket.socket(socket.AF_UNIX)
client.connect(sys.argv[1])
client.send(b"hello")
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
client.send(b"after restore")
os.write(1, b"client got " + client.recv(100) + b"\\n")
time.sleep(1000)
"""


def test_a_stream_client_of_a_server_outside_comes_back_as_a_new_connection(reaper, tmp_path):
    path = tmp_path / "server.sock"
    with listening_outside(path) as server:
        tree = start_tree([PYTHON, "-c", CLIENT, str(path)], tmp_path)
        try:
            first, _ = server.accept()
            with first:
                first.settimeout(5)
                assert first.recv(100) == b"hello"
                done = run_cli("dump", "-t", str(tree.root), "-D", str(tree.images), "--ext-unix-sk")
                assert done.returncode == 0, done.stderr
                tree.reap_killed()
                shown = run_cli("show", str(tree.images))
                assert f"connected outside the tree to {os.fsencode(path)!r}" in shown.stdout, shown.stdout
                assert first.recv(100) == b""  # the old connection ended with the dumped process
            tree.restore()
            (tmp_path / "go").touch()
            second, _ = server.accept()
            with second:
                second.settimeout(5)
                assert second.recv(100) == b"after restore"
                second.send(b"welcome back")
                wait_for(lambda: lines(tree.out, "client"), what="the client's answer")
            assert lines(tree.out, "client") == [["client", "got", "welcome", "back"]]
        finally:
            tree.stop()


def test_a_stream_client_with_bytes_queued_from_outside_is_refused_even_with_the_flag(reaper, tmp_path):
    """Only the outside server could send those bytes again."""
    path = tmp_path / "server.sock"
    with listening_outside(path) as server:
        tree = start_tree([PYTHON, "-c", CLIENT, str(path)], tmp_path)
        try:
            first, _ = server.accept()
            with first:
                first.settimeout(5)
                assert first.recv(100) == b"hello"
                first.send(b"unread!")
                with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd \d+ \(socket:\[\d+\]\): 7 bytes queued "
                                                    r"from socket \d+ \(.*\) outside the tree, which only that socket "
                                                    r"could send again: not supported$"):
                    dump(tree.root, tree.images, DumpOptions(ext_unix_sk=True))
                assert exists(tree.root) and not tree.images.exists()
                (tmp_path / "go").touch()
                assert first.recv(100) == b"after restore"  # unharmed: it goes on on its connection
                wait_for(lambda: lines(tree.out, "client"), what="the client to read what was queued")
                assert lines(tree.out, "client") == [["client", "got", "unread!"]]
        finally:
            tree.stop()


def test_a_restore_whose_outside_server_is_gone_fails_naming_it_and_leaves_no_process(reaper, tmp_path):
    path = tmp_path / "server.sock"
    with listening_outside(path) as server:
        tree = start_tree([PYTHON, "-c", CLIENT, str(path)], tmp_path)
        try:
            with server.accept()[0]:
                dump(tree.root, tree.images, DumpOptions(ext_unix_sk=True))
                tree.reap_killed()
        except BaseException:
            tree.stop()
            raise
    try:  # the server's socket file is left, with no socket bound to it
        with pytest.raises(RestoreError, match=rf"unix socket \d+: connecting it again to "
                                               rf"{os.fsencode(path)!r} outside the tree: Connection refused"):
            restore.restore(str(tree.images), detach=True)
        assert not exists(tree.root)
    finally:
        tree.stop()


RESET = """
import errno, os, socket, sys, time
client = socket.socket(socket.AF_UNIX)
client.connect(sys.argv[1])
client.send(b"hello")
os.write(1, b"ready ok=1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
try:
    got = repr(client.recv(100))
except OSError as exc:
    got = errno.errorcode[exc.errno]
os.write(1, f"client got {got}\\n".encode())
time.sleep(1000)
"""


def test_a_client_whose_outside_server_closed_the_connection_is_refused_and_keeps_its_error(reaper, tmp_path):
    """A peek would take the ECONNRESET the server left by closing with "hello" unread: refused before it."""
    path = tmp_path / "server.sock"
    with listening_outside(path) as server:
        tree = start_tree([PYTHON, "-c", RESET, str(path)], tmp_path)
        try:
            server.accept()[0].close()
            with pytest.raises(DumpError, match=rf"^pid {tree.root}: fd \d+ \(socket:\[\d+\]\): connected to a "
                                                r"socket that has closed the connection"):
                dump(tree.root, tree.images, DumpOptions(ext_unix_sk=True))
            assert exists(tree.root) and not tree.images.exists()
            (tmp_path / "go").touch()
            wait_for(lambda: lines(tree.out, "client"), what="the client to read")
            assert lines(tree.out, "client") == [["client", "got", "ECONNRESET"]]
        finally:
            tree.stop()
