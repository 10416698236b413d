"""TCP connections caught closing (CLOSE_WAIT, FIN_WAIT1/2, LAST_ACK) across dump and restore; others refused.

A server whose client has shut down its sending side (CLOSE_WAIT, the EOF
not yet read) reads the bytes left and then EOF after the restore, and its
reply reaches the client; a process that shut down its own sending side
(FIN_WAIT2) still receives what the peer sends, then EOF; one whose FIN the
lock held unsent (FIN_WAIT1, LAST_ACK) sends it after the restore, after its
last bytes, once. The peer's FIN a restored socket must have received is a
segment crafted from a raw socket through the lock (kernel/tcp_fin.py).
A CLOSING one (both FINs sent, this end's not acknowledged) ends both ways.
Refused, naming the connection and its state: a connection still being made
(SYN_SENT), one that has ended (its descriptor reads CLOSE; TIME_WAIT is the
kernel's own socket) and, without --tcp-established, a closing one.
"""

import dataclasses
import socket
import subprocess
import time

import pytest

from restore_support import lines, wait_for
from runtime.dump import DumpOptions, dump
from runtime.errors import DumpError, ImageError
from runtime.files import registry
from runtime.images import loader
from runtime.images.model import FdKind, FileEntry, InetSocket, TcpRepair
from runtime.kernel import netlock, tcp_repair
import test_restore_tcp
from test_restore_tcp import LOOPBACK, PYTHON, _dump
from tree_support import start_tree

no_lock_left = test_restore_tcp.no_lock_left  # autouse here too: a lock a failed test left is lifted

# A server: accepts one client, waits for "go", reads everything until EOF, replies with what it got, closes.
LATE_READER = """
import os, socket, sys, time
family, host = int(sys.argv[1]), sys.argv[2]
server = socket.socket(family, socket.SOCK_STREAM)
if host == "::":  # dual-stack: an IPv4 client's connection is an IPv6 socket's, at ::ffff:127.0.0.1
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind((host, 0))
server.listen(1)
os.write(1, f"ready port={server.getsockname()[1]}\\n".encode())
conn, _ = server.accept()
os.write(1, b"accepted 1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
got = b""
while True:
    data = conn.recv(65536)
    if not data:
        break
    got += data
conn.sendall(b"server got %d bytes: %s" % (len(got), got[-20:]))
conn.close()
os.write(1, f"eof after {len(got)}\\n".encode())
time.sleep(1000)
"""

# A client of a server outside the tree: sends its words, shuts down its sending side when told ("shut"), then,
# told "go", reads until EOF.
HALF_CLOSER = """
import os, socket, sys, time
family, port = int(sys.argv[1]), int(sys.argv[2])
conn = socket.create_connection(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
os.write(1, f"ready local={conn.getsockname()[1]}\\n".encode())
while not os.path.exists("shut"):
    time.sleep(0.01)
conn.sendall(b"last words")
conn.shutdown(socket.SHUT_WR)
os.write(1, b"shut 1\\n")
while not os.path.exists("go"):
    time.sleep(0.01)
got = b""
while True:
    data = conn.recv(65536)
    if not data:
        break
    got += data
os.write(1, b"client got " + got.replace(b" ", b"_") + b" then EOF\\n")
time.sleep(1000)
"""


def _repaired(images) -> list[TcpRepair]:
    with loader.load(images) as checkpoint:
        return [e.inet.tcp for image in checkpoint.processes for e in image.process.files
                if e.inet is not None and e.inet.tcp is not None]


def _read_to_eof(conn: socket.socket, timeout: float = 20.0) -> bytes:
    conn.settimeout(timeout)
    got = b""
    while True:
        data = conn.recv(65536)  # a reset raises: the test fails
        if not data:
            return got
        got += data


def _state(conn: socket.socket) -> str:
    return {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 7: "CLOSE", 8: "CLOSE_WAIT",
            9: "LAST_ACK"}.get(tcp_repair.tcp_state(conn), "?")


@pytest.mark.parametrize("family, host, client_host", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "::1"), (socket.AF_INET6, "::", "127.0.0.1")],
    ids=["ipv4", "ipv6", "ipv4-mapped"])
def test_a_server_in_close_wait_reads_the_bytes_left_then_eof_and_its_reply_arrives(family, host, client_host, reaper,
                                                                                      tmp_path):
    tree = start_tree([PYTHON, "-c", LATE_READER, str(int(family)), host], tmp_path)
    port = int(tree.info["port"])
    try:
        with socket.create_connection((client_host, port)) as client:
            wait_for(lambda: lines(tree.out, "accepted"), what="the server to accept")
            client.sendall(b"the question, " * 100)
            client.shutdown(socket.SHUT_WR)
            wait_for(lambda: _state(client) == "FIN_WAIT2", what="the server's kernel to ack the FIN")
            with pytest.raises(DumpError, match=r"<-> .*\): a TCP connection in state CLOSE_WAIT: dump with "
                                                r"--tcp-established"):
                dump(tree.root, tree.images, DumpOptions())
            _dump(tree, tcp_established=True)
            [tcp] = _repaired(tree.images)
            assert tcp.state == "CLOSE_WAIT" and tcp.recv_queue == b"the question, " * 100
            tree.restore()
            (tmp_path / "go").touch()
            reply = _read_to_eof(client)
        assert reply == b"server got 1400 bytes: " + (b"the question, " * 2)[-20:]
        wait_for(lambda: lines(tree.out, "eof"), what="the server to close")
        assert lines(tree.out, "eof") == [["eof", "after", "1400"]]
        assert not netlock.locked()
    finally:
        tree.stop()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_a_process_in_fin_wait2_still_receives_the_peers_data_then_eof(family, reaper, tmp_path):
    with socket.socket(family) as listener:
        listener.bind((LOOPBACK[family], 0))
        listener.listen(1)
        tree = start_tree([PYTHON, "-c", HALF_CLOSER, str(int(family)), str(listener.getsockname()[1])], tmp_path)
        try:
            peer, _ = listener.accept()
            with peer:
                (tmp_path / "shut").touch()
                assert _read_to_eof(peer) == b"last words"
                peer.sendall(b"before ")  # unread at the dump
                wait_for(lambda: _state(peer) == "CLOSE_WAIT", what="the peer to take the FIN")
                _dump(tree, tcp_established=True)
                [tcp] = _repaired(tree.images)
                assert (tcp.state, tcp.recv_queue, tcp.send_queue) == ("FIN_WAIT2", b"before ", b"")
                peer.sendall(b"during ")  # dropped by the lock, sent again by the peer's kernel
                tree.restore()
                peer.sendall(b"after")
                (tmp_path / "go").touch()
                time.sleep(0.2)
                assert _state(peer) == "CLOSE_WAIT", "the restored FIN's resend is nothing new to the peer"
            wait_for(lambda: lines(tree.out, "client"), timeout=20, what="the client to read EOF")
            assert lines(tree.out, "client") == [["client", "got", "before_during_after", "then", "EOF"]]
        finally:
            tree.stop()


def test_fin_wait1_and_its_unsent_bytes_are_sent_once_after_the_restore(reaper, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        tree = start_tree([PYTHON, "-c", HALF_CLOSER, str(int(socket.AF_INET)), str(listener.getsockname()[1])],
                          tmp_path)
        try:
            peer, _ = listener.accept()
            with peer:
                # The connection held from before the shutdown: its bytes and FIN are not sent, the FIN not acked.
                held = netlock.Connection(socket.AF_INET, "127.0.0.1", listener.getsockname()[1], "127.0.0.1",
                                          int(tree.info["local"]))
                netlock.lock([held])
                (tmp_path / "shut").touch()
                wait_for(lambda: lines(tree.out, "shut"), what="the client to shut down")
                _dump(tree, tcp_established=True)
                [tcp] = _repaired(tree.images)
                assert (tcp.state, tcp.send_queue, tcp.unsent) == ("FIN_WAIT1", b"last words", len(b"last words"))
                tree.restore()
                assert _read_to_eof(peer) == b"last words"
                peer.sendall(b"reply")
            (tmp_path / "go").touch()
            wait_for(lambda: lines(tree.out, "client"), timeout=20, what="the client to read EOF")
            assert lines(tree.out, "client") == [["client", "got", "reply", "then", "EOF"]]
        finally:
            tree.stop()


# A server that replies and shuts down after its client's EOF, keeping the socket open (LAST_ACK once its FIN goes).
SHUTTING_SERVER = """
import os, socket, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
os.write(1, f"ready port={server.getsockname()[1]}\\n".encode())
conn, _ = server.accept()
while conn.recv(65536):
    pass
while not os.path.exists("shut"):
    time.sleep(0.01)
conn.sendall(b"goodbye")
conn.shutdown(socket.SHUT_WR)
os.write(1, b"shut 1\\n")
time.sleep(1000)
"""


def test_last_ack_sends_its_last_bytes_and_fin_after_the_restore(reaper, tmp_path):
    tree = start_tree([PYTHON, "-c", SHUTTING_SERVER], tmp_path)
    port = int(tree.info["port"])
    try:
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.shutdown(socket.SHUT_WR)
            wait_for(lambda: _state(client) == "FIN_WAIT2", what="the server's kernel to ack the FIN")
            netlock.lock([netlock.Connection(socket.AF_INET, "127.0.0.1", port, *client.getsockname())])
            (tmp_path / "shut").touch()
            wait_for(lambda: lines(tree.out, "shut"), what="the server to shut down")
            _dump(tree, tcp_established=True)
            [tcp] = _repaired(tree.images)
            assert (tcp.state, tcp.send_queue) == ("LAST_ACK", b"goodbye")
            tree.restore()
            assert _read_to_eof(client) == b"goodbye"
    finally:
        tree.stop()


# A client that shut its connection down for receiving: after the restore reads still return EOF, writes still go.
READ_SHUT = """
import os, socket, sys, time
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
conn.shutdown(socket.SHUT_RD)
os.write(1, f"ready local={conn.getsockname()[1]}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
conn.settimeout(5)
os.write(1, b"read %r\\n" % conn.recv(100))
conn.sendall(b"still writing")
time.sleep(1000)
"""


def test_a_connection_shut_down_for_receiving_still_reads_eof_and_writes(reaper, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        tree = start_tree([PYTHON, "-c", READ_SHUT, str(listener.getsockname()[1])], tmp_path)
        try:
            peer, _ = listener.accept()
            with peer:
                _dump(tree, tcp_established=True)
                tree.restore()
                (tmp_path / "go").touch()
                peer.settimeout(20)
                assert peer.recv(100) == b"still writing"
            assert lines(tree.out, "read") == [["read", "b''"]]
        finally:
            tree.stop()


# A non-blocking connect to a listener whose accept queue is full: the SYN is dropped, the socket stays SYN_SENT.
CONNECTING = """
import os, select, socket, sys, time
conn = socket.socket()
conn.setblocking(False)
conn.connect_ex(("127.0.0.1", int(sys.argv[1])))
os.write(1, f"ready local={conn.getsockname()[1]}\\n".encode())
select.select([], [conn], [], 30)
os.write(1, f"connected {conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)}\\n".encode())
time.sleep(1000)
"""


def test_a_connection_being_made_is_refused_naming_it_and_syn_sent_and_goes_on(reaper, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one connection waiting fills its accept queue
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            tree = start_tree([PYTHON, "-c", CONNECTING, str(port)], tmp_path)
            try:
                local = int(tree.info["local"])
                with pytest.raises(DumpError, match=rf"tcp 127\.0\.0\.1:{local} <-> 127\.0\.0\.1:{port}\): a TCP "
                                                    r"socket in state SYN_SENT: not supported"):
                    dump(tree.root, tree.images, DumpOptions(tcp_established=True))
                assert not netlock.locked()
                listener.accept()[0].close()  # room: the SYN sent again gets through
                wait_for(lambda: lines(tree.out, "connected"), timeout=20, what="the connection to be made")
                assert lines(tree.out, "connected") == [["connected", "0"]]
            finally:
                tree.stop()


def test_a_connection_ended_in_time_wait_is_refused_and_its_bytes_still_read(reaper, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        tree = start_tree([PYTHON, "-c", HALF_CLOSER, str(int(socket.AF_INET)), str(listener.getsockname()[1])],
                          tmp_path)
        try:
            peer, _ = listener.accept()
            with peer:
                (tmp_path / "shut").touch()
                assert _read_to_eof(peer) == b"last words"
                peer.sendall(b"farewell")
            time.sleep(0.2)  # over loopback the FIN and its ack are through at once
            # Both FINs acknowledged: the kernel's TIME_WAIT socket holds the connection, the descriptor's is CLOSE.
            with pytest.raises(DumpError, match=r"fd 3 \(tcp 127\.0\.0\.1:\d+\): a TCP socket whose connection has "
                                                r"ended \(closed by both ends, now in TIME_WAIT, or reset\)"):
                dump(tree.root, tree.images, DumpOptions(tcp_established=True))
            (tmp_path / "go").touch()
            wait_for(lambda: lines(tree.out, "client"), what="the client to read EOF")
            assert lines(tree.out, "client") == [["client", "got", "farewell", "then", "EOF"]]
        finally:
            tree.stop()


def test_a_corrupt_connection_state_is_refused_naming_the_field():
    tcp = TcpRepair(state="FIN_WAIT2", send_seq=10, recv_seq=20, send_queue=b"", unsent=0, recv_queue=b"", mss=1460,
                    snd_wscale=7, rcv_wscale=7, wscale=True, sack=True, timestamps=True, timestamp=1, snd_wl1=20,
                    snd_wnd=65535, max_window=65535, rcv_wnd=65535, rcv_wup=20)
    record = InetSocket(family=socket.AF_INET, type=socket.SOCK_STREAM, state="established", local="127.0.0.1",
                        local_port=5000, remote="127.0.0.1", remote_port=6000, tcp=tcp)
    registry.check(FileEntry(1, FdKind.INET, inet=record), "process-1.json", "files[0]")
    for change, field in ((dict(state="TIME_WAIT"), "state"), (dict(send_queue=b"x"), "send_queue")):
        entry = FileEntry(1, FdKind.INET, inet=dataclasses.replace(record, tcp=dataclasses.replace(tcp, **change)))
        with pytest.raises(ImageError, match=rf"process-1\.json: files\[0\]\.inet\.tcp\.{field}: "):
            registry.check(entry, "process-1.json", "files[0]")


@pytest.fixture
def one_way_drop():
    """A table of the test's own dropping, at the peer's input, what one port sends another: sent, never arrived."""
    tables = []

    def drop(sport: int, dport: int) -> None:
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            "add table inet revive_test\n"
            "add chain inet revive_test input { type filter hook input priority -300; policy accept; }\n"
            f"add rule inet revive_test input tcp sport {sport} tcp dport {dport} drop\n"))
        tables.append(sport)

    yield drop
    if tables:
        subprocess.run(["nft", "delete", "table", "inet", "revive_test"], check=False, capture_output=True)


def test_closing_with_its_fin_sent_and_the_peers_received_ends_both_ways(reaper, tmp_path, one_way_drop):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        tree = start_tree([PYTHON, "-c", HALF_CLOSER, str(int(socket.AF_INET)), str(port)], tmp_path)
        try:
            peer, _ = listener.accept()
            with peer:
                one_way_drop(int(tree.info["local"]), port)  # the client's bytes and FIN leave, and are lost
                (tmp_path / "shut").touch()
                wait_for(lambda: lines(tree.out, "shut"), what="the client to shut down")
                peer.shutdown(socket.SHUT_WR)  # reaches the client: both FINs sent, the client's not acked
                _dump(tree, tcp_established=True)
                [tcp] = _repaired(tree.images)
                assert (tcp.state, tcp.send_queue, tcp.unsent) == ("CLOSING", b"last words", 0)
                subprocess.run(["nft", "delete", "table", "inet", "revive_test"], check=True)
                tree.restore()
                # Sent again by the restored socket's retransmission timer, FIN included, once.
                assert _read_to_eof(peer) == b"last words"
                (tmp_path / "go").touch()
                wait_for(lambda: lines(tree.out, "client"), timeout=20, what="the client to read EOF")
                assert lines(tree.out, "client") == [["client", "got", "then", "EOF"]]
                wait_for(lambda: _state(peer) == "CLOSE", timeout=20, what="the peer's FIN to be acknowledged")
        finally:
            tree.stop()


def test_the_lock_holds_an_ipv4_client_of_a_dual_stack_server_sending_during_the_dump(reaper, tmp_path):
    # The server's socket is IPv6 (::ffff:127.0.0.1), the packets IPv4: the lock must match them as IPv4 ones.
    tree = start_tree([PYTHON, "-c", LATE_READER, str(int(socket.AF_INET6)), "::"], tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", int(tree.info["port"]))) as client:
            wait_for(lambda: lines(tree.out, "accepted"), what="the server to accept")
            client.sendall(b"before ")
            _dump(tree, tcp_established=True)
            client.sendall(b"during ")  # reaching no socket, it would be answered with a reset
            time.sleep(0.3)
            tree.restore()
            client.sendall(b"after")
            client.shutdown(socket.SHUT_WR)
            (tmp_path / "go").touch()
            assert _read_to_eof(client) == b"server got 19 bytes: " + b"before during after"[-20:]
    finally:
        tree.stop()
