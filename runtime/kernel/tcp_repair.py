"""TCP repair mode (TCP_REPAIR and its companions): read an established connection's state, and write it back.

Why repair mode: a TCP connection's state (sequence numbers, what was sent
and not acknowledged, what was received and not read, the options both ends
agreed in the handshake) lives only in the kernel. With TCP_REPAIR on
(CAP_NET_ADMIN) a socket gives it up through getsockopt and peeks, takes it
back through setsockopt and writes, connects without a handshake, and
closes without sending anything: what lets the dump kill a server without
resetting its clients, and the restore make the same connection again.

Kernel facts (include/uapi/linux/tcp.h, net/ipv4/tcp.c): TCP_REPAIR 19,
TCP_REPAIR_QUEUE 20 selects the queue (TCP_NO_QUEUE 0, TCP_RECV_QUEUE 1,
TCP_SEND_QUEUE 2) that TCP_QUEUE_SEQ 21 reads or sets (write_seq for the
send queue, rcv_nxt for the receive queue), and that a write fills (the
send queue's bytes count as sent, unacknowledged); TCP_REPAIR_OPTIONS 22
takes struct tcp_repair_opt {u32 code, u32 value} pairs (TCPOPT_MSS 2,
TCPOPT_WINDOW 3 with snd_wscale | rcv_wscale << 16, TCPOPT_SACK_PERM 4,
TCPOPT_TIMESTAMP 8) on an established socket; TCP_TIMESTAMP 24;
TCP_REPAIR_WINDOW 29, struct tcp_repair_window {snd_wl1, snd_wnd,
max_window, rcv_wnd, rcv_wup}, u32 each. TCP_REPAIR -1 (TCP_REPAIR_OFF_NO_WP)
leaves repair mode without the window probe that 0 sends.
"""

import fcntl
import socket
import struct
from dataclasses import dataclass

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
REPAIR_ON, REPAIR_OFF, REPAIR_OFF_NO_WP = 1, 0, -1
NO_QUEUE, RECV_QUEUE, SEND_QUEUE = 0, 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
WINDOW = struct.Struct("<5I")
TCP_INFO_HEAD = struct.Struct("<8B")  # state, ca_state, retransmits, probes, backoff, options, wscales, flags
TCP_INFO_SIZE = 232
U32 = struct.Struct("<I")
WRITE_CHUNK = 1 << 16


@dataclass(frozen=True)
class Window:
    """struct tcp_repair_window."""

    snd_wl1: int
    snd_wnd: int
    max_window: int
    rcv_wnd: int
    rcv_wup: int


@dataclass(frozen=True)
class Options:
    """What both ends agreed at the handshake (tcp_info), as TCP_REPAIR_OPTIONS takes it back."""

    mss: int
    wscale: bool
    snd_wscale: int
    rcv_wscale: int
    sack: bool
    timestamps: bool


def tcp_state(sock: socket.socket) -> int:
    """tcpi_state: TCP_ESTABLISHED 1, TCP_SYN_SENT 2, ..., TCP_CLOSE 7, TCP_LISTEN 10."""
    return TCP_INFO_HEAD.unpack_from(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE))[0]


def set_repair(sock: socket.socket, mode: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, mode)


def queued(sock: socket.socket, request: int) -> int:
    """SIOCINQ (unread bytes), SIOCOUTQ (unacknowledged bytes) or SIOCOUTQNSD (bytes never sent)."""
    return U32.unpack(fcntl.ioctl(sock.fileno(), request, bytes(U32.size)))[0]


def select_queue(sock: socket.socket, queue: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)


def queue_seq(sock: socket.socket, queue: int) -> int:
    """The queue's sequence number (repair mode): write_seq of the send queue, rcv_nxt of the receive queue."""
    select_queue(sock, queue)
    return U32.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, U32.size))[0]


def set_queue_seq(sock: socket.socket, queue: int, seq: int) -> None:
    """Before connect: where the queue's sequence numbers start."""
    select_queue(sock, queue)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, U32.pack(seq & 0xFFFFFFFF))


def peek_queue(sock: socket.socket, queue: int, size: int) -> bytes:
    """The queue's bytes, left in place (repair mode; the send queue can only be peeked)."""
    select_queue(sock, queue)
    if not size:
        return b""
    data = sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    if len(data) != size:
        raise OSError(0, f"peeked {len(data)} of the {size} bytes of its {_QUEUE_NAMES[queue]} queue")
    return data


def write_queue(sock: socket.socket, queue: int, data: bytes) -> None:
    """data put into the queue (repair mode): the send queue as sent and unacknowledged, the receive queue unread."""
    select_queue(sock, queue)
    view = memoryview(data)
    while view:
        written = sock.send(view[:WRITE_CHUNK], socket.MSG_DONTWAIT)
        view = view[written:]


def read_options(sock: socket.socket) -> Options:
    head = TCP_INFO_HEAD.unpack_from(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE))
    options, scales = head[5], head[6]
    return Options(mss=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
                   wscale=bool(options & TCPI_OPT_WSCALE), snd_wscale=scales & 0xF, rcv_wscale=scales >> 4,
                   sack=bool(options & TCPI_OPT_SACK), timestamps=bool(options & TCPI_OPT_TIMESTAMPS))


def write_options(sock: socket.socket, options: Options) -> None:
    """After connect (the kernel takes them only on an established socket)."""
    pairs = [(TCPOPT_MSS, options.mss)]
    if options.wscale:
        pairs.append((TCPOPT_WINDOW, options.snd_wscale | options.rcv_wscale << 16))
    if options.sack:
        pairs.append((TCPOPT_SACK_PERM, 0))
    if options.timestamps:
        pairs.append((TCPOPT_TIMESTAMP, 0))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, b"".join(struct.pack("<II", *p) for p in pairs))


def read_timestamp(sock: socket.socket) -> int:
    return U32.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, U32.size))[0]


def write_timestamp(sock: socket.socket, value: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, U32.pack(value))


def read_window(sock: socket.socket) -> Window:
    return Window(*WINDOW.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, WINDOW.size)))


def write_window(sock: socket.socket, window: Window) -> None:
    """After the receive queue is written (the kernel checks rcv_wup against rcv_nxt)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW,
                    WINDOW.pack(window.snd_wl1, window.snd_wnd, window.max_window, window.rcv_wnd, window.rcv_wup))


_QUEUE_NAMES = {RECV_QUEUE: "receive", SEND_QUEUE: "send"}
