"""TCP and UDP sockets (IPv4, IPv6): listening, bound, connected and established ones, made again by the restore.

Why per open file, made by the restoring child: an inet socket is one open
file description, whose state the kernel keeps by address, not by peer
inside the tree, so the child that holds it (or, shared, the nearest common
ancestor of its holders, files/table.py) makes it with socket(2) and puts it
at its descriptor like any other file; nothing needs making in pairs.

The dump reads each socket through a descriptor of its own taken with
pidfd_getfd (the same socket, while the tree is stopped): its addresses,
the options users set (files/sockopts.py: those that differ from a new
socket's, set back before it is bound), its buffer sizes, its state and
shutdowns from sock_diag (kernel/inet_diag.py), a UDP socket's queued
datagrams peeked with their senders. An established TCP connection, or
one closing (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING), is
refused unless the dump is given --tcp-established or --tcp-close
(docs/tcp.md tells the whole story):

- --tcp-established: every such connection's packets are dropped first (the
  network lock, kernel/netlock.py), then its socket is put in repair mode
  (kernel/tcp_repair.py) and its sequence numbers, queues, options and
  window are read, and which FINs were sent and received: the restore
  makes this end's again by shutdown(SHUT_WR), the peer's by a segment
  crafted as the peer's (kernel/tcp_fin.py), each at the sequence number it
  had. After a successful dump the process is killed with the
  socket still in repair mode, which closes it without sending anything; the
  lock stays until a restore has made the socket again. A failed dump or
  --leave-running takes the socket out of repair mode and lifts the lock:
  the connection goes on.
- --tcp-close: nothing is kept; the dump resets the connection (the peer
  sees a reset) and the restored process finds a socket whose connection was
  reset: its next read or write fails with ECONNRESET, then reads return 0
  and writes fail with EPIPE.

Refused, naming the fd, the addresses and the state: a connection being
made (SYN_SENT, SYN_RECV: repair cannot make a handshake), one that has
ended (its descriptor's socket reads CLOSE, its unread bytes and EOF or
reset with it; TIME_WAIT is never a descriptor's: the kernel's own socket
holds it), connections completed on a listener and not yet
accepted (they would be reset; with --tcp-close they are, and their clients
reconnect), sockets of other protocols (raw, SCTP) or of another network
namespace (no kind matches them).
"""

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field, replace

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files import sockopts
from runtime.files.base import (SETFL_FLAGS, FdTable, FileKindBase, held_entries, peek_next, peeking, place,
                                refuse_payload)
from runtime.images.model import Datagram, FdKind, FileEntry, InetSocket, TcpRepair
from runtime.kernel import inet_diag, netlock, pidfd, tcp_fin, tcp_repair
from runtime.kernel.procfs.fds import FileKind, OpenFile

log = logging.getLogger(__name__)

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
UDP_PEEK_MAX = 1 << 16  # the largest UDP datagram
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
STATES = ("unbound", "bound", "listening", "established", "connected")
# A connection's TCP states that repair can make again; the FIN this end sent, the FIN the peer sent, in which.
CONNECTED = ("ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK", "CLOSING")
FIN_SENT = ("FIN_WAIT1", "FIN_WAIT2", "LAST_ACK", "CLOSING")
FIN_RECEIVED = ("CLOSE_WAIT", "LAST_ACK", "CLOSING")
TCPI_SEGS_OUT = struct.Struct("<I")  # struct tcp_info's tcpi_segs_out, at offset 136
FIN_WAIT_TIMEOUT = 2.0  # seconds for the crafted FIN to reach its socket (over loopback: at once)
FAMILIES = (socket.AF_INET, socket.AF_INET6)
TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM)
PROTOCOLS = ("TCP", "TCPv6", "UDP", "UDPv6")  # the sockets' xattr system.sockprotoname (OpenFile.protocol)


def endpoint(family: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


def describe_socket(record: InetSocket) -> str:
    """tcp 127.0.0.1:5000 <-> 127.0.0.1:40000 (the words a refusal and `show` use)."""
    protocol = ("tcp" if record.type == socket.SOCK_STREAM else "udp") + ("6" if record.family == socket.AF_INET6
                                                                          else "")
    words = [protocol]
    if record.local_port:
        words.append(endpoint(record.family, record.local, record.local_port))
    if record.remote_port:
        words += ["<->", endpoint(record.family, record.remote, record.remote_port)]
    return " ".join(words)


class InetEnd(FileKindBase):
    kind = FdKind.INET

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.SOCKET and open_file.protocol in PROTOCOLS

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        # The socket itself is read by save(), once the whole tree's fds are known (the network lock is one).
        return FileEntry(file_id, self.kind, flags=open_file.flags)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        record = entry.inet
        if record is None:
            raise ImageError(file, f"{field}.inet", "an inet socket's open file holds its socket")
        where = f"{field}.inet"
        if record.family not in FAMILIES:
            raise ImageError(file, f"{where}.family", f"{record.family} is neither AF_INET nor AF_INET6")
        if record.type not in TYPES:
            raise ImageError(file, f"{where}.type", f"{record.type} is neither SOCK_STREAM nor SOCK_DGRAM")
        if record.state not in STATES:
            raise ImageError(file, f"{where}.state", f"{record.state!r} is none of {', '.join(STATES)}")
        for name in ("local", "remote"):
            address = getattr(record, name)
            if address:
                try:
                    socket.inet_pton(record.family, address)
                except OSError:
                    raise ImageError(file, f"{where}.{name}", f"{address!r} is no address of its family") from None
        for name in ("local_port", "remote_port"):
            if getattr(record, name) > 0xFFFF:
                raise ImageError(file, f"{where}.{name}", f"{getattr(record, name)} is no port")
        stream = record.type == socket.SOCK_STREAM
        if record.state == "established":
            if not stream or (record.tcp is not None) == record.reset:
                raise ImageError(file, f"{where}.tcp", "an established socket is a TCP connection with either its "
                                                       "repair state or reset")
        elif record.tcp is not None or record.reset:
            raise ImageError(file, f"{where}.tcp", f"a {record.state} socket has no connection state")
        if stream and record.state == "connected":
            raise ImageError(file, f"{where}.state", "a TCP socket is established, not connected")
        if stream and record.queue:
            raise ImageError(file, f"{where}.queue", "only a UDP socket queues datagrams")
        sockopts.check(record.options, record.family, record.type, file, f"{where}.options")
        if record.state in ("listening", "established", "bound") and not record.local_port:
            raise ImageError(file, f"{where}.local_port", f"a {record.state} socket has a port")
        if record.state in ("established", "connected") and not (record.remote and record.remote_port):
            raise ImageError(file, f"{where}.remote", f"a {record.state} socket has a peer")
        if record.tcp is not None and record.tcp.unsent > len(record.tcp.send_queue):
            raise ImageError(file, f"{where}.tcp.unsent", "more than its send queue")
        if record.tcp is not None and record.tcp.state not in CONNECTED:
            raise ImageError(file, f"{where}.tcp.state", f"{record.tcp.state!r} is none of {', '.join(CONNECTED)}")
        if record.tcp is not None and record.tcp.state == "FIN_WAIT2" and record.tcp.send_queue:
            raise ImageError(file, f"{where}.tcp.send_queue", "in FIN_WAIT2 the peer acknowledged every byte sent")
        if record.tcp is not None and any(getattr(record.tcp, name) > 0xFFFFFFFF for name in (
                "send_seq", "recv_seq", "timestamp", "snd_wl1", "snd_wnd", "max_window", "rcv_wnd", "rcv_wup")):
            raise ImageError(file, f"{where}.tcp", "a sequence number or window of more than 32 bits")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        record = entry.inet
        what = f"fd {number} ({describe_socket(record)})"
        try:
            sock = socket.socket(record.family, record.type)
        except OSError as exc:
            raise RestoreError(pid, f"{what}: socket: {exc.strerror}") from exc
        with sock:
            try:
                _make(record, sock, pid, what)
            except OSError as exc:
                raise RestoreError(pid, f"{what}: {exc.strerror or exc}") from exc
            place(sock.detach(), number, inheritable)
        fcntl.fcntl(number, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
        return number

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        record = entry.inet
        if record is None:
            return "inet socket (not read)", ""
        words = [describe_socket(record), record.state]
        if record.reset:
            words.append("(reset at restore)")
        if record.tcp is not None and record.tcp.state != "ESTABLISHED":
            words.append(f"({record.tcp.state})")
        if record.tcp is not None:
            words.append(f"send queue {len(record.tcp.send_queue)} bytes ({record.tcp.unsent} unsent), "
                         f"receive queue {len(record.tcp.recv_queue)} bytes")
        if record.state == "listening":
            words.append(f"backlog {record.backlog}")
        if record.queue:
            words.append(f"{len(record.queue)} datagrams ({sum(len(d.data) for d in record.queue)} bytes) queued")
        if record.options:
            words.append(f"options {sockopts.describe(record.options)}")
        return " ".join(words), ""


KIND = InetEnd()


# -- the dump ---------------------------------------------------------------------------------------------------

@dataclass
class Dumped:
    """The runtime's own descriptors of the tree's TCP connections, and the network lock, until the dump ends.

    Exactly one of release() (a failed dump, --leave-running: the connections go on) and close() (the tree
    was killed: the sockets close in repair mode, silently, or reset for --tcp-close) must be called.
    """

    repaired: list[socket.socket] = field(default_factory=list)  # in repair mode
    locked: list[netlock.Connection] = field(default_factory=list)
    reset: list[socket.socket] = field(default_factory=list)  # --tcp-close: reset when the tree is gone
    others: list[socket.socket] = field(default_factory=list)

    def release(self) -> None:
        """Out of repair mode and unlocked: the connections go on as if nothing happened."""
        failures = []
        for sock in self.repaired:
            try:
                tcp_repair.set_repair(sock, tcp_repair.REPAIR_OFF)
            except OSError as exc:
                failures.append(f"{sock}: {exc.strerror}")
        self._close_all()
        try:
            netlock.unlock(self.locked)
        except netlock.LockError as exc:
            failures.append(str(exc))
        self.locked = []
        if failures:
            log.error("releasing the TCP connections after the dump: %s", "; ".join(failures))

    def close(self) -> None:
        """The tree is gone: the repaired sockets close without a packet, the --tcp-close ones with a reset."""
        for sock in self.reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close_all()

    def _close_all(self) -> None:
        for sock in self.repaired + self.reset + self.others:
            sock.close()
        self.repaired, self.reset, self.others = [], [], []


@dataclass(frozen=True)
class TcpChoice:
    """What the dump does with established TCP connections: keep them, reset them, or refuse (neither)."""

    established: bool = False  # --tcp-established
    close: bool = False  # --tcp-close


def save(tables: dict[int, FdTable], shared: tuple[FileEntry, ...], choice: TcpChoice,
         dumped: Dumped) -> tuple[dict[int, FdTable], tuple[FileEntry, ...]]:
    """Every inet socket of the tree read into its entry: (tables, shared) with each INET entry filled in.

    Refusals come before the lock; the established connections kept are locked, then read in repair mode.
    dumped receives the runtime's descriptors and the lock: the caller releases or closes it.
    """
    held = {entry.id: (pid, fd) for pid, fd, entry in held_entries(tables, shared) if entry.kind is FdKind.INET}
    if not held:
        return tables, shared
    diag = inet_diag.inet_sockets()
    defaults = sockopts.Defaults()
    records: dict[int, InetSocket] = {}
    to_repair: list[tuple[int, str, socket.socket]] = []
    for entry_id, (pid, fd) in sorted(held.items()):
        sock = socket.socket(fileno=pidfd.get_fd(pid, fd))
        dumped.others.append(sock)
        inode = os.fstat(sock.fileno()).st_ino
        what = f"fd {fd} (socket:[{inode}])"
        try:
            record = _read(pid, fd, sock, diag.get(inode), choice, defaults)
        except OSError as exc:
            raise DumpError(pid, f"{what}: {exc.strerror or exc}") from exc
        if record.state == "established":
            dumped.others.remove(sock)
            if choice.established:
                to_repair.append((entry_id, what, sock))
                dumped.locked.append(netlock.Connection(record.family, record.local, record.local_port,
                                                        record.remote, record.remote_port))
                dumped.repaired.append(sock)
            else:
                dumped.reset.append(sock)
        records[entry_id] = record
    if to_repair:
        try:
            netlock.lock(dumped.locked)
        except netlock.LockError as exc:
            dumped.locked = []
            raise DumpError(held[to_repair[0][0]][0], f"locking the network: {exc}") from exc
        for entry_id, what, sock in to_repair:
            pid = held[entry_id][0]
            try:
                records[entry_id] = replace(records[entry_id], tcp=_repair_read(sock))
            except OSError as exc:
                raise DumpError(pid, f"{what} ({describe_socket(records[entry_id])}): reading it in repair mode: "
                                     f"{exc.strerror or exc}") from exc

    def filled(entry: FileEntry) -> FileEntry:
        return replace(entry, inet=records[entry.id]) if entry.kind is FdKind.INET else entry

    return ({pid: (slots, tuple(map(filled, own))) for pid, (slots, own) in tables.items()},
            tuple(map(filled, shared)))


def _address(sock: socket.socket, peer: bool) -> tuple[str, int]:
    try:
        found = sock.getpeername() if peer else sock.getsockname()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return "", 0
        raise
    return found[0], found[1]


def _read(pid: int, fd: int, sock: socket.socket, diag: inet_diag.InetDiag | None,
          choice: TcpChoice, defaults: sockopts.Defaults) -> InetSocket:
    """Everything but a connection's repair state; a DumpError for what is refused.

    diag: what sock_diag reports of it, which is nothing for a socket no port is hashed for (unbound, or a
    TCP socket bound and not listening).
    """
    what = f"fd {fd} (socket:[{os.fstat(sock.fileno()).st_ino}])"
    if sock.family not in FAMILIES or sock.type not in TYPES:
        raise DumpError(pid, f"{what}: an inet socket of family {sock.family} type {sock.type}: not supported")
    local, local_port = _address(sock, peer=False)
    remote, remote_port = _address(sock, peer=True)
    stream = sock.type == socket.SOCK_STREAM
    base = InetSocket(family=sock.family, type=sock.type, state="unbound", local=local if local_port else "",
                      local_port=local_port, remote=remote, remote_port=remote_port,
                      shutdown=diag.shutdown if diag is not None else 0,
                      **_buffers(sock))
    what = f"fd {fd} ({describe_socket(base)})"
    base = replace(base, options=sockopts.save(sock, defaults, pid, what, connected=stream and bool(remote_port)))
    if not stream:
        state = "connected" if remote_port else "bound" if local_port else "unbound"
        return replace(base, state=state, queue=_peek_datagrams(pid, what, sock))
    state = tcp_repair.tcp_state(sock)
    if diag is None and state != TCP_CLOSE:
        raise DumpError(pid, f"{what}: a TCP socket sock_diag does not report (of another network namespace?): "
                             "not supported")
    if state == TCP_LISTEN:
        if diag.pending and not choice.close:
            raise DumpError(pid, f"{what}: {diag.pending} connections completed and not yet accepted, which the "
                                 "dump would reset: dump again once they are accepted, or with --tcp-close (their "
                                 "clients see a reset)")
        return replace(base, state="listening", backlog=diag.backlog)
    if state == TCP_CLOSE:
        if _ended(sock):
            # TIME_WAIT is never a descriptor's: the kernel moves the connection to a socket of its own and the
            # descriptor's reads CLOSE, its unread bytes and the peer's EOF (or a reset) still to be read.
            raise DumpError(pid, f"{what}: a TCP socket whose connection has ended (closed by both ends, now in "
                                 "TIME_WAIT, or reset): not supported")
        return replace(base, state="bound" if local_port else "unbound")
    name = TCP_STATES.get(state, str(state))
    if name not in CONNECTED:
        if not remote_port:  # a connecting socket has no peer getpeername tells
            base = replace(base, remote=diag.peer, remote_port=diag.peer_port)
        raise DumpError(pid, f"fd {fd} ({describe_socket(base)}): a TCP socket in state {name}: not supported (a "
                             "connection not yet made, which TCP repair cannot make again)")
    if not (choice.established or choice.close):
        connection = "an established TCP connection" if name == "ESTABLISHED" else f"a TCP connection in state {name}"
        raise DumpError(pid, f"{what}: {connection}: dump with --tcp-established to keep it (TCP repair), or "
                             "--tcp-close to reset it")
    return replace(base, state="established", reset=not choice.established)


def _ended(sock: socket.socket) -> bool:
    """A TCP socket in CLOSE that had a connection (which sent segments), not one never connected or refused.

    A refused or failed connect disconnects the socket, which clears its counters: it is like a new one.
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, tcp_repair.TCP_INFO_SIZE)
    return len(info) >= 140 and TCPI_SEGS_OUT.unpack_from(info, 136)[0] > 0


def _buffers(sock: socket.socket) -> dict:
    """rcvbuf and sndbuf, each where it differs from a new socket's (the other options: files/sockopts.py)."""
    buffers = {}
    with socket.socket(sock.family, sock.type) as fresh:
        for name, option in (("rcvbuf", socket.SO_RCVBUF), ("sndbuf", socket.SO_SNDBUF)):
            value = sock.getsockopt(socket.SOL_SOCKET, option)
            buffers[name] = value if value != fresh.getsockopt(socket.SOL_SOCKET, option) else 0
    return buffers


def _peek_datagrams(pid: int, what: str, sock: socket.socket) -> tuple[Datagram, ...]:
    """Every datagram of the receive queue with its sender, oldest first, the queue left as it was."""
    found = []
    with peeking(sock):
        while (peeked := peek_next(sock, UDP_PEEK_MAX)) is not None:
            data, _, flags, source = peeked
            if flags & socket.MSG_TRUNC:
                raise DumpError(pid, f"{what}: a datagram of more than {UDP_PEEK_MAX} bytes in its queue")
            if not data:
                # An empty datagram does not move the peek offset: the ones behind it cannot be reached.
                raise DumpError(pid, f"{what}: an empty datagram in its queue: not supported")
            found.append(Datagram(source[0], source[1], data))
    return tuple(found)


def _repair_read(sock: socket.socket) -> TcpRepair:
    """A connection's state, read in repair mode (the lock holds its packets).

    A FIN this end sent has the last sequence number of the send queue: write_seq counts it, and so do the
    unacknowledged (SIOCOUTQ) and unsent (SIOCOUTQNSD) counts while it is so; the peek gives bytes only. A FIN
    received: rcv_nxt counts it, SIOCINQ does not.
    """
    tcp_repair.set_repair(sock, tcp_repair.REPAIR_ON)
    state = TCP_STATES.get(tcp_repair.tcp_state(sock), "?")
    if state not in CONNECTED:  # it moved on since it was first read (a TIME_WAIT's descriptor reads CLOSE)
        raise OSError(0, f"now in state {state}, which TCP repair cannot make again")
    fin = state in FIN_SENT
    send_len = max(tcp_repair.queued(sock, tcp_repair.SIOCOUTQ) - fin, 0)
    unsent = max(tcp_repair.queued(sock, tcp_repair.SIOCOUTQNSD) - fin, 0)
    recv_len = tcp_repair.queued(sock, tcp_repair.SIOCINQ)
    send_seq = tcp_repair.queue_seq(sock, tcp_repair.SEND_QUEUE)
    send_queue = tcp_repair.peek_queue(sock, tcp_repair.SEND_QUEUE, send_len)
    recv_seq = tcp_repair.queue_seq(sock, tcp_repair.RECV_QUEUE)
    recv_queue = tcp_repair.peek_queue(sock, tcp_repair.RECV_QUEUE, recv_len)
    tcp_repair.select_queue(sock, tcp_repair.NO_QUEUE)
    options = tcp_repair.read_options(sock)
    window = tcp_repair.read_window(sock)
    return TcpRepair(state=state, send_seq=send_seq, recv_seq=recv_seq, send_queue=send_queue,
                     unsent=min(unsent, send_len), recv_queue=recv_queue, mss=options.mss,
                     snd_wscale=options.snd_wscale, rcv_wscale=options.rcv_wscale, wscale=options.wscale,
                     sack=options.sack, timestamps=options.timestamps, timestamp=tcp_repair.read_timestamp(sock),
                     snd_wl1=window.snd_wl1, snd_wnd=window.snd_wnd, max_window=window.max_window,
                     rcv_wnd=window.rcv_wnd, rcv_wup=window.rcv_wup)


def connections(entries: tuple[FileEntry, ...]) -> list[netlock.Connection]:
    """The connections the dump locked that these entries restore: what the restore unlocks once they are live."""
    return [netlock.Connection(e.inet.family, e.inet.local, e.inet.local_port, e.inet.remote, e.inet.remote_port)
            for e in entries if e.kind is FdKind.INET and e.inet is not None and e.inet.tcp is not None]


# -- the restore ------------------------------------------------------------------------------------------------

def _make(record: InetSocket, sock: socket.socket, pid: int, what: str) -> None:
    """The socket made as it was dumped (see the module docstring)."""
    # Before the bind (IPV6_V6ONLY, SO_BINDTODEVICE), the connect (TCP_CONGESTION) and the listen (TCP_FASTOPEN).
    sockopts.apply(sock, record.options, pid, what)
    if record.tcp is not None:
        # Its queues must fit (a repair-mode write waits for buffer room like any other): the dumped sizes, at
        # least twice each queue's bytes, forced past net.core.[rw]mem_max (CAP_NET_ADMIN). They stay fixed.
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, max(record.sndbuf // 2, len(record.tcp.send_queue)))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, max(record.rcvbuf // 2, len(record.tcp.recv_queue)))
    elif record.state != "established":
        # getsockopt reports twice what setsockopt was given (the kernel's bookkeeping share).
        if record.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, record.rcvbuf // 2)
        if record.sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, record.sndbuf // 2)
    if record.tcp is not None:
        _make_repaired(record, sock)
    elif record.reset:
        _make_reset(sock)
    elif record.state != "unbound":
        # The dumped process held the port until the dump killed it: a connection of it may linger (TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((record.local, record.local_port))
        if record.queue:
            _fill_datagrams(record, sock, pid, what)
        if record.state == "listening":
            sock.listen(record.backlog)
        if record.state == "connected":
            sock.connect((record.remote, record.remote_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, (sockopts.value_of(record.options, "SO_REUSEADDR")
                                                              or (0,))[0])


def _make_repaired(record: InetSocket, sock: socket.socket) -> None:
    """The connection made again in repair mode (no handshake, nothing sent), then live; its packets stay
    dropped by the network lock until the restore has made every socket of the tree.

    A closing state: this end's FIN goes in by shutdown(SHUT_WR), in repair mode with the send queue selected
    when everything before it was sent (it counts as sent, unacknowledged: the retransmission timer sends it
    again, and the peer acknowledges it once more if it had it), else as an ordinary shutdown after the unsent
    bytes; the peer's FIN by a segment crafted as the peer's (kernel/tcp_fin.py). Each sequence number starts
    one lower for it, so the FIN takes the number it had. The order makes the state: FIN_WAIT1 then the peer's
    FIN is CLOSING, the peer's FIN then this end's is LAST_ACK.
    """
    tcp = record.tcp
    sent = len(tcp.send_queue) - tcp.unsent
    fin_sent, fin_received = tcp.state in FIN_SENT, tcp.state in FIN_RECEIVED
    fin_in_repair = fin_sent and not tcp.unsent
    send_start = tcp.send_seq - fin_sent - len(tcp.send_queue)
    tcp_repair.set_repair(sock, tcp_repair.REPAIR_ON)  # also lets it bind the port its listener holds
    tcp_repair.set_queue_seq(sock, tcp_repair.SEND_QUEUE, send_start)
    tcp_repair.set_queue_seq(sock, tcp_repair.RECV_QUEUE, tcp.recv_seq - fin_received - len(tcp.recv_queue))
    tcp_repair.select_queue(sock, tcp_repair.NO_QUEUE)
    sock.bind((record.local, record.local_port))
    sock.connect((record.remote, record.remote_port))
    tcp_repair.write_options(sock, tcp_repair.Options(tcp.mss, tcp.wscale, tcp.snd_wscale, tcp.rcv_wscale, tcp.sack,
                                                      tcp.timestamps))
    if tcp.timestamps:
        tcp_repair.write_timestamp(sock, tcp.timestamp)
    # What the peer may already have seen goes in as sent; the rest is sent as new data once live.
    tcp_repair.write_queue(sock, tcp_repair.SEND_QUEUE, tcp.send_queue[:sent])
    tcp_repair.write_queue(sock, tcp_repair.RECV_QUEUE, tcp.recv_queue)
    if fin_in_repair and tcp.state != "LAST_ACK":
        _shut_sending_in_repair(sock)
    if fin_received:
        _receive_fin(record, sock, ack=send_start)
    if fin_in_repair and tcp.state == "LAST_ACK":
        _shut_sending_in_repair(sock)
    tcp_repair.select_queue(sock, tcp_repair.NO_QUEUE)
    # After the peer's FIN: the kernel refuses an rcv_wup past rcv_nxt, and the dumped one counts the FIN.
    tcp_repair.write_window(sock, tcp_repair.Window(tcp.snd_wl1, tcp.snd_wnd, tcp.max_window, tcp.rcv_wnd,
                                                    tcp.rcv_wup))
    tcp_repair.set_repair(sock, tcp_repair.REPAIR_OFF)
    if tcp.unsent:
        view = memoryview(tcp.send_queue)[sent:]
        while view:
            view = view[sock.send(view, socket.MSG_DONTWAIT):]
    if fin_sent and not fin_in_repair:
        sock.shutdown(socket.SHUT_WR)
    if record.shutdown & 1 and not fin_received:  # shut down for receiving by the process: nothing is sent
        sock.shutdown(socket.SHUT_RD)


def _shut_sending_in_repair(sock: socket.socket) -> None:
    """This end's FIN queued as sent and unacknowledged, nothing sent now (repair mode, send queue selected)."""
    tcp_repair.select_queue(sock, tcp_repair.SEND_QUEUE)
    sock.shutdown(socket.SHUT_WR)


def _receive_fin(record: InetSocket, sock: socket.socket, ack: int) -> None:
    """The peer's FIN, at the sequence number it had, taken by the socket (it acknowledges ack, its snd_una)."""
    tcp = record.tcp
    tcp_repair.select_queue(sock, tcp_repair.NO_QUEUE)
    before = tcp_repair.tcp_state(sock)
    window = tcp.snd_wnd >> tcp.snd_wscale if tcp.wscale else tcp.snd_wnd
    tcp_fin.send_fin(record.family, (record.remote, record.remote_port), (record.local, record.local_port),
                     seq=tcp.recv_seq - 1, ack=ack, window=window)
    deadline = time.monotonic() + FIN_WAIT_TIMEOUT
    while tcp_repair.tcp_state(sock) == before:
        if time.monotonic() > deadline:
            raise OSError(0, f"the peer's FIN, sent from a raw socket through the network lock, did not reach it "
                             f"(still {TCP_STATES.get(before, before)})")
        time.sleep(0.001)


def _make_reset(sock: socket.socket) -> None:
    """A socket whose connection the peer reset (--tcp-close): connected over loopback to a socket that aborts."""
    loopback = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(sock.family, socket.SOCK_STREAM) as listener:
        listener.bind((loopback, 0))
        listener.listen(1)
        sock.connect(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        with accepted:
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _fill_datagrams(record: InetSocket, sock: socket.socket, pid: int, what: str) -> None:
    """Each queued datagram sent again to the socket, from its sender's address where that address is free."""
    target = record.local
    if target in ("0.0.0.0", "::"):
        target = "::1" if record.family == socket.AF_INET6 else "127.0.0.1"
    for datagram in record.queue:
        with socket.socket(record.family, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sender.bind((datagram.source, datagram.source_port))
            except OSError as exc:
                log.warning("pid %d: %s: a queued datagram from %s comes from another address: %s", pid, what,
                            endpoint(record.family, datagram.source, datagram.source_port), exc.strerror)
            if sender.sendto(datagram.data, socket.MSG_DONTWAIT, (target, record.local_port)) != len(datagram.data):
                raise RestoreError(pid, f"{what}: a queued datagram was cut")
