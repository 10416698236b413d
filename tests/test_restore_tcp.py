"""TCP sockets across dump and restore: listeners, connections inside the tree and to a client outside it.

A Python echo server and its client, both in the tree, with bytes unread
each way at the dump: after the restore the conversation goes on and every
byte arrives once. A client outside the tree holds a connection to a dumped
server and sends during the dump window: nothing is lost and the
connection is never reset. Without --tcp-established the dump refuses,
naming the connection, and the server serves on; a dump that fails after
the network lock leaves the connection working and the lock gone.
"""

import contextlib
import dataclasses
import errno
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from restore_support import lines, wait_for
from runtime import faults
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError, ImageError
from runtime.files import inet, registry
from runtime.images import loader
from runtime.images.model import Datagram, FdKind, FileEntry, InetSocket
from runtime.kernel import netlock
from tree_support import start_tree

PYTHON = "/usr/bin/python3"
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}

# A server and the client it forks, each with bytes sent to the other and not yet read at the dump.
ECHO_PAIR = """
import os, socket, sys, time
family = int(sys.argv[1])
host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, 0))
server.listen(5)
port = server.getsockname()[1]
child = os.fork()
if child == 0:
    server.close()
    conn = socket.create_connection((host, port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"question-" * 1000)
    while not os.path.exists("go"):
        time.sleep(0.01)
    conn.sendall(b"end")
    got = b""
    while not got.endswith(b"bye"):
        got += conn.recv(65536)
    os.write(1, f"client got {len(got)} {got.count(b'welcome-')} {got.count(b'answer-')}\\n".encode())
    os._exit(0)
conn, _ = server.accept()
conn.sendall(b"welcome-" * 5000)
time.sleep(0.2)
os.write(1, f"ready child={child} port={port}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
got = b""
while not got.endswith(b"end"):
    got += conn.recv(65536)
conn.sendall(b"answer-" * got.count(b"question-") + b"bye")
os.write(1, f"server got {len(got)} {got.count(b'question-')}\\n".encode())
os.waitpid(child, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""

# A server with one connection from outside: it echoes each line, counting them; a listener for new clients.
SERVER = """
import os, selectors, socket, sys, time
family = int(sys.argv[1])
host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, 0))
server.listen(8)
os.write(1, f"ready port={server.getsockname()[1]}\\n".encode())
sel = selectors.DefaultSelector()
sel.register(server, selectors.EVENT_READ)
buffers = {}
while True:
    for key, _ in sel.select():
        if key.fileobj is server:
            conn, _ = server.accept()
            sel.register(conn, selectors.EVENT_READ)
            buffers[conn] = b""
            continue
        conn = key.fileobj
        try:
            data = conn.recv(65536)
        except OSError as exc:
            os.write(1, f"dropped {exc.errno}\\n".encode())
            data = b""
        if not data:
            sel.unregister(conn)
            conn.close()
            continue
        buffers[conn] += data
        while b"\\n" in buffers[conn]:
            line, _, buffers[conn] = buffers[conn].partition(b"\\n")
            conn.sendall(b"echo " + line + b"\\n")
"""


@pytest.fixture(autouse=True)
def no_lock_left():
    """A test that failed between a dump and its restore leaves the lock: lifted, so the next test starts clean."""
    yield
    with contextlib.suppress(netlock.LockError):
        if netlock.locked():
            subprocess.run(["nft", "delete", "table", netlock.FAMILY, netlock.TABLE], check=False)


def _dump(tree, **options) -> None:
    dump(tree.root, tree.images, DumpOptions(**options))
    tree.reap_killed()


def _ask(conn: socket.socket, line: bytes, timeout: float = 20.0) -> bytes:
    conn.settimeout(timeout)
    conn.sendall(line + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "the server closed the connection"
        got += chunk
    return got


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_an_echo_server_and_its_client_in_the_tree_go_on_with_every_byte_once(family, reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", ECHO_PAIR, str(int(family))], tmp_path)
    try:
        tree.pids = [tree.root, int(tree.info["child"])]
        _dump(tree, tcp_established=True)
        with loader.load(tree.images) as checkpoint:
            records = [e.inet for image in checkpoint.processes for e in image.process.files if e.inet is not None]
        states = sorted(record.state for record in records)
        assert states == ["established", "established", "listening"]
        queued = sorted(len(r.tcp.recv_queue) for r in records if r.tcp is not None)
        assert queued == [9000, 40000]
        assert netlock.locked(), "the lock holds the connection until the restore"
        tree.restore()
        assert not netlock.locked(), "the restore released the lock"
        (tmp_path / "go").touch()
        wait_for(lambda: "done" in tree.out.read_text(), timeout=30, what="the conversation to end")
        assert lines(tree.out, "server") == [["server", "got", str(9003), "1000"]]
        assert lines(tree.out, "client") == [["client", "got", str(40000 + 7000 + 3), "5000", "1000"]]
    finally:
        tree.stop()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_a_client_outside_sending_during_the_dump_loses_nothing_and_is_never_reset(family, reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(family))], tmp_path)
    address = (LOOPBACK[family], int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            _dump(tree, tcp_established=True)
            client.sendall(b"two\nthree\n")  # sent into the dump window: dropped by the lock, retransmitted
            time.sleep(0.3)
            tree.restore()
            client.settimeout(20)
            got = b""
            while got.count(b"\n") < 2:
                chunk = client.recv(4096)
                assert chunk, "the connection was closed"
                got += chunk
            assert got == b"echo two\necho three\n"
            assert _ask(client, b"four") == b"echo four\n"
            with socket.create_connection(address, timeout=10) as newcomer:
                assert _ask(newcomer, b"new") == b"echo new\n"
    finally:
        tree.stop()


def test_without_tcp_established_the_dump_names_the_connection_and_the_server_serves_on(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(socket.AF_INET))], tmp_path)
    address = ("127.0.0.1", int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            local = client.getsockname()
            with pytest.raises(DumpError, match=rf"tcp 127\.0\.0\.1:{address[1]} <-> 127\.0\.0\.1:{local[1]}\): an "
                                                r"established TCP connection: dump with --tcp-established"):
                dump(tree.root, tree.images, DumpOptions())
            assert _ask(client, b"two") == b"echo two\n"
            assert not netlock.locked()
    finally:
        tree.stop()


def test_a_dump_failing_after_the_lock_leaves_the_connection_working_and_no_lock(reaper, tmp_path, monkeypatch):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(socket.AF_INET))], tmp_path)
    address = ("127.0.0.1", int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            monkeypatch.setenv(faults.ENV, faults.NETWORK_STEPS[0])
            with pytest.raises(faults.InjectedFault):
                dump(tree.root, tree.images, DumpOptions(tcp_established=True))
            monkeypatch.delenv(faults.ENV)
            assert not netlock.locked()
            assert _ask(client, b"two", timeout=5) == b"echo two\n"
    finally:
        tree.stop()


def test_leave_running_takes_the_connection_out_of_repair_and_lifts_the_lock(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(socket.AF_INET))], tmp_path)
    address = ("127.0.0.1", int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            dump(tree.root, tree.images, DumpOptions(tcp_established=True, leave_running=True))
            assert not netlock.locked()
            assert _ask(client, b"two", timeout=5) == b"echo two\n"
    finally:
        tree.stop()


def test_tcp_close_resets_the_peer_and_the_restored_server_sees_a_reset_connection(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(socket.AF_INET))], tmp_path)
    address = ("127.0.0.1", int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            _dump(tree, tcp_close=True)
            client.settimeout(5)
            with pytest.raises(ConnectionResetError):
                client.sendall(b"two\n")
                client.recv(10)
        assert not netlock.locked()
        tree.restore()
        # The server's select reports the reset connection; it reads an error or EOF and drops it, then serves.
        with socket.create_connection(address, timeout=10) as newcomer:
            assert _ask(newcomer, b"new") == b"echo new\n"
        assert lines(tree.out, "dropped") == [["dropped", str(errno.ECONNRESET)]]
    finally:
        tree.stop()


def test_show_lists_each_socket_with_addresses_state_and_queues(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SERVER, str(int(socket.AF_INET))], tmp_path)
    address = ("127.0.0.1", int(tree.info["port"]))
    try:
        with socket.create_connection(address) as client:
            assert _ask(client, b"one") == b"echo one\n"
            client.sendall(b"unread")  # no newline: the server keeps it in its buffer, the kernel queue is read
            _dump(tree, tcp_established=True)
            shown = subprocess.run([sys.executable, "-m", "runtime", "show", str(tree.images)], capture_output=True,
                                   text=True, check=True).stdout
            assert f"tcp 127.0.0.1:{address[1]} listening backlog 8" in shown
            assert f"tcp 127.0.0.1:{address[1]} <-> 127.0.0.1:{client.getsockname()[1]} established" in shown
        with contextlib.suppress(netlock.LockError):
            netlock.unlock(inet.connections(_entries(tree.images)))
    finally:
        tree.stop()


def _entries(images):
    with loader.load(images) as checkpoint:
        return tuple(e for image in checkpoint.processes for e in image.process.files)


# Sockets of each kind but established ones, with the options users set; datagrams queued on a UDP socket.
SOCKETS = """
import fcntl, json, os, socket, sys, time
S, T, U = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.SOCK_DGRAM
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(S, socket.SO_REUSEADDR, 1)
listener.setsockopt(T, socket.TCP_NODELAY, 1)
listener.setsockopt(S, socket.SO_KEEPALIVE, 1)
listener.setsockopt(T, socket.TCP_KEEPIDLE, 77)
listener.setsockopt(T, socket.TCP_KEEPINTVL, 11)
listener.setsockopt(T, socket.TCP_KEEPCNT, 5)
listener.setsockopt(S, socket.SO_RCVBUF, 100000)
listener.bind(("127.0.0.1", 0))
listener.listen(17)
listener.setblocking(False)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.setsockopt(S, socket.SO_REUSEPORT, 1)
v6.bind(("::", 0))
v6.listen(3)
bound = socket.socket()
bound.bind(("127.0.0.1", 0))
unbound = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
udp = socket.socket(socket.AF_INET, U)
udp.bind(("127.0.0.1", 0))
sender = socket.socket(socket.AF_INET, U)
sender.bind(("127.0.0.1", 0))
for n in range(3):
    sender.sendto(f"queued {n}".encode(), udp.getsockname())
connected = socket.socket(socket.AF_INET6, U)
connected.connect(("::1", 9))
names = dict(listener=listener, v6=v6, bound=bound, unbound=unbound, udp=udp, sender=sender, connected=connected)
ports = {name: s.getsockname()[1] for name, s in names.items()}
os.write(1, ("ready " + " ".join(f"{k}={v}" for k, v in ports.items()) + "\\n").encode())
while not os.path.exists("go"):
    time.sleep(0.01)
def opts(s):
    found = dict(reuseaddr=s.getsockopt(S, socket.SO_REUSEADDR), reuseport=s.getsockopt(S, socket.SO_REUSEPORT),
                 keepalive=s.getsockopt(S, socket.SO_KEEPALIVE), rcvbuf=s.getsockopt(S, socket.SO_RCVBUF),
                 nonblock=bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK),
                 name=list(s.getsockname()[:2]))
    if s.type == socket.SOCK_STREAM:
        found.update(nodelay=s.getsockopt(T, socket.TCP_NODELAY), idle=s.getsockopt(T, socket.TCP_KEEPIDLE),
                     intvl=s.getsockopt(T, socket.TCP_KEEPINTVL), cnt=s.getsockopt(T, socket.TCP_KEEPCNT),
                     listening=s.getsockopt(S, socket.SO_ACCEPTCONN))
    if s.family == socket.AF_INET6:
        found["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    return found
os.write(1, ("options " + json.dumps({name: opts(s) for name, s in names.items()}) + "\\n").encode())
udp.settimeout(20)
for n in range(4):
    data, source = udp.recvfrom(100)
    os.write(1, f"datagram {data.decode().replace(' ', '_')} {source[1]}\\n".encode())
listener.setblocking(True)
conn, _ = listener.accept()
conn.sendall(b"accepted\\n")
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_listening_bound_unbound_and_udp_sockets_keep_their_addresses_options_and_queued_datagrams(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SOCKETS], tmp_path)
    ports = {name: int(port) for name, port in tree.info.items()}
    try:
        _dump(tree)
        with loader.load(tree.images) as checkpoint:
            records = {e.inet.local_port: e.inet for image in checkpoint.processes for e in image.process.files
                       if e.inet is not None}
        assert records[ports["listener"]].backlog == 17
        assert [d.data for d in records[ports["udp"]].queue] == [b"queued 0", b"queued 1", b"queued 2"]
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: lines(tree.out, "options"), what="the options")
        options = json.loads(tree.out.read_text().split("options ", 1)[1].splitlines()[0])
        assert options["listener"] == dict(reuseaddr=1, reuseport=0, keepalive=1, rcvbuf=200000, nonblock=True,
                                           name=["127.0.0.1", ports["listener"]], nodelay=1, idle=77, intvl=11,
                                           cnt=5, listening=1)
        assert options["v6"]["v6only"] == 1 and options["v6"]["reuseport"] == 1 and options["v6"]["listening"]
        assert options["v6"]["name"] == ["::", ports["v6"]]
        assert options["bound"]["name"] == ["127.0.0.1", ports["bound"]] and not options["bound"]["listening"]
        assert options["unbound"]["name"][1] == 0
        # Bound to ::1 again, it is IPv6-only, as a socket bound to a non-mapped IPv6 address always is.
        assert options["connected"]["name"] == ["::1", ports["connected"]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outside:
            outside.sendto(b"after", ("127.0.0.1", ports["udp"]))
            wait_for(lambda: len(lines(tree.out, "datagram")) == 4, what="the datagrams")
            outside_port = outside.getsockname()[1]
        assert lines(tree.out, "datagram") == [
            ["datagram", f"queued_{n}", str(ports["sender"])] for n in range(3)] + [
            ["datagram", "after", str(outside_port)]]
        with socket.create_connection(("127.0.0.1", ports["listener"]), timeout=10) as client:
            assert client.recv(100) == b"accepted\n"
    finally:
        tree.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _redis(conn: socket.socket, *commands: bytes) -> list[bytes]:
    """Inline commands, one reply each (a status, an integer or a bulk string's value)."""
    conn.sendall(b"".join(command + b"\r\n" for command in commands))
    replies, buffer = [], b""
    while len(replies) < len(commands):
        while b"\r\n" not in buffer:
            chunk = conn.recv(65536)
            assert chunk, "redis closed the connection"
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n")
        if head.startswith(b"$") and head != b"$-1":
            size = int(head[1:])
            while len(rest) < size + 2:
                chunk = conn.recv(65536)
                assert chunk, "redis closed the connection"
                rest += chunk
            replies.append(rest[:size])
            buffer = rest[size + 2:]
        else:
            replies.append(head)
            buffer = rest
    return replies


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed (scripts/setup.sh)")
def test_redis_with_a_client_outside_keeps_every_key_and_the_open_connection(reaper, tmp_path):
    port = _free_port()
    tree = start_tree(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", str(tmp_path)], tmp_path, ready=False)
    try:
        wait_for(lambda: _listening(port), what="redis to listen")
        tree.pids = [tree.root]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            keys = 1000
            assert set(_redis(client, *(b"SET key%d value-%d" % (n, n) for n in range(keys)))) == {b"+OK"}
            _dump(tree, tcp_established=True)
            tree.restore()
            values = _redis(client, *(b"GET key%d" % n for n in range(keys)))
            assert values == [b"value-%d" % n for n in range(keys)]
            assert _redis(client, b"SET after restored", b"GET after") == [b"+OK", b"restored"]
            with socket.create_connection(("127.0.0.1", port), timeout=20) as newcomer:
                assert _redis(newcomer, b"GET key999", b"DBSIZE") == [b"value-999", b":%d" % (keys + 1)]
    finally:
        tree.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


NOT_ACCEPTING = """
import os, socket, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(4)
os.write(1, f"ready port={server.getsockname()[1]}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
conn, _ = server.accept()
conn.sendall(b"accepted")
time.sleep(1000)
"""


def test_a_connection_waiting_to_be_accepted_is_refused_and_still_accepted_afterwards(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", NOT_ACCEPTING], tmp_path)
    port = int(tree.info["port"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            with pytest.raises(DumpError, match=rf"fd 3 \(tcp 127\.0\.0\.1:{port}\): 1 connections completed and not "
                                                r"yet accepted, which the dump would reset"):
                dump(tree.root, tree.images, DumpOptions(tcp_established=True))
            (tmp_path / "go").touch()
            assert client.recv(100) == b"accepted"
    finally:
        tree.stop()


@pytest.mark.parametrize("change, field", [
    (dict(inet=None), r"files\[0\]\.inet"),
    (dict(family=99), r"files\[0\]\.inet\.family"),
    (dict(state="half-open"), r"files\[0\]\.inet\.state"),
    (dict(local="not-an-address"), r"files\[0\]\.inet\.local"),
    (dict(local_port=70000), r"files\[0\]\.inet\.local_port"),
    (dict(state="established"), r"files\[0\]\.inet\.tcp"),
    (dict(queue=(Datagram("127.0.0.1", 1, b"x"),)), r"files\[0\]\.inet\.queue"),
])
def test_a_corrupt_inet_socket_is_refused_naming_the_field(change, field):
    record = InetSocket(family=socket.AF_INET, type=socket.SOCK_STREAM, state="listening", local="127.0.0.1",
                        local_port=5000, remote="", remote_port=0, backlog=5)
    entry = FileEntry(1, FdKind.INET, inet=None if "inet" in change else dataclasses.replace(record, **change))
    with pytest.raises(ImageError, match=rf"process-1\.json: {field}: "):
        registry.check(entry, "process-1.json", "files[0]")


# The server writes until its send queue is full too: megabytes in both queues of one connection at the dump.
FULL_QUEUES = """
import hashlib, os, socket, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
address = server.getsockname()
child = os.fork()
if child == 0:
    server.close()
    conn = socket.create_connection(address)
    while not os.path.exists("go"):
        time.sleep(0.01)
    digest, size = hashlib.sha256(), 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        digest.update(data)
        size += len(data)
    os.write(1, f"client got {size} {digest.hexdigest()}\\n".encode())
    os._exit(0)
conn, _ = server.accept()
conn.setblocking(False)
digest, sent, block = hashlib.sha256(), 0, bytes(range(256)) * 256
while True:
    try:
        n = conn.send(block)
    except BlockingIOError:
        time.sleep(0.05)
        try:
            n = conn.send(block)
        except BlockingIOError:
            break
    digest.update(block[:n])
    sent += n
os.write(1, f"ready child={child} sent={sent} digest={digest.hexdigest()}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
conn.setblocking(True)
conn.close()
os.waitpid(child, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""


def test_megabytes_in_both_queues_of_a_connection_arrive_whole(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", FULL_QUEUES], tmp_path)
    try:
        tree.pids = [tree.root, int(tree.info["child"])]
        _dump(tree, tcp_established=True)
        with loader.load(tree.images) as checkpoint:
            repaired = [e.inet.tcp for image in checkpoint.processes for e in image.process.files
                        if e.inet is not None and e.inet.tcp is not None]
        assert all(len(tcp.send_queue) + len(tcp.recv_queue) > 0 for tcp in repaired)
        assert sum(len(tcp.send_queue) for tcp in repaired) > 100_000
        tree.restore()
        (tmp_path / "go").touch()
        wait_for(lambda: "done" in tree.out.read_text(), timeout=30, what="the client to read everything")
        assert lines(tree.out, "client") == [["client", "got", tree.info["sent"], tree.info["digest"]]]
    finally:
        tree.stop()
