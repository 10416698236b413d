"""The peer's FIN given to a connection made again in repair mode: a TCP segment crafted and sent from a raw socket.

Why: TCP repair sets a connection's sequence numbers, queues, options and
window, but has no way to say "the peer's FIN was received"; a socket in
CLOSE_WAIT, LAST_ACK or CLOSING must have taken one (its reads return EOF
after the queued bytes, its state moves on when its own FIN is acked). So
the restore sends it one: a segment with FIN and ACK, from the peer's
address and port to the socket's, its sequence number the FIN's (the
dumped rcv_nxt minus one), its acknowledgement the socket's snd_una (an
acknowledgement of anything newer would be of data not yet sent, which
the kernel drops; an older one is merely old), its window what the peer
last announced. The kernel takes it like the peer's own.

How: an IPPROTO_RAW socket (the header included: IPv4 or IPv6 with the
peer's address as source; CAP_NET_RAW) sends it to the local address, so
the kernel routes it through loopback and hands it to the socket at once.
The network lock (kernel/netlock.py) drops every packet of the connection:
the segment carries the lock's mark (SO_MARK, CAP_NET_ADMIN), which its
first rule accepts in both hooks; the mark stays with the packet from the
output hook to the input hook over loopback. No timestamp option is sent
(the kernel accepts a segment without one; a made-up TSval could be newer
than the peer's clock and make the kernel drop the peer's real segments
as old, PAWS).
"""

import ipaddress
import socket
import struct

from runtime.kernel import netlock

TCP_FLAG_FIN, TCP_FLAG_ACK = 0x01, 0x10
TCP_HEADER = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, data offset, flags, window, checksum, urgent
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
HOP_LIMIT = 64


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fin_segment(family: int, source: tuple[str, int], destination: tuple[str, int], seq: int, ack: int,
                window: int) -> bytes:
    """The whole packet, IP header included: a FIN with ACK from source to destination."""
    src, dst = socket.inet_pton(family, source[0]), socket.inet_pton(family, destination[0])
    head = TCP_HEADER.pack(source[1], destination[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, TCP_HEADER.size // 4 << 4,
                           TCP_FLAG_FIN | TCP_FLAG_ACK, min(window, 0xFFFF), 0, 0)
    if family == socket.AF_INET6:
        pseudo = src + dst + struct.pack("!I3xB", len(head), socket.IPPROTO_TCP)
    else:
        pseudo = src + dst + struct.pack("!xBH", socket.IPPROTO_TCP, len(head))
    tcp = head[:16] + struct.pack("!H", _checksum(pseudo + head)) + head[18:]
    if family == socket.AF_INET6:
        return IPV6_HEADER.pack(6 << 28, len(tcp), socket.IPPROTO_TCP, HOP_LIMIT, src, dst) + tcp
    # Don't fragment; the kernel fills in the id and, for an IPPROTO_RAW socket, the header checksum.
    ip = IPV4_HEADER.pack(0x45, 0, IPV4_HEADER.size + len(tcp), 0, 0x4000, HOP_LIMIT, socket.IPPROTO_TCP, 0, src, dst)
    return ip + tcp


def send_fin(family: int, peer: tuple[str, int], local: tuple[str, int], seq: int, ack: int, window: int) -> None:
    """The peer's FIN (sequence number seq, acknowledging ack) sent to the local end, through the network lock."""
    if family == socket.AF_INET6 and all(ipaddress.IPv6Address(a).ipv4_mapped for a in (peer[0], local[0])):
        # An IPv6 socket talking IPv4 (::ffff:a.b.c.d): its segments are IPv4 ones.
        family = socket.AF_INET
        peer = (str(ipaddress.IPv6Address(peer[0]).ipv4_mapped), peer[1])
        local = (str(ipaddress.IPv6Address(local[0]).ipv4_mapped), local[1])
    packet = fin_segment(family, peer, local, seq, ack, window)
    try:
        with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, netlock.MARK)
            sent = raw.sendto(packet, (local[0], 0))
    except OSError as exc:  # EPERM: dropped by a lock without the mark's rule (made by an older revive)
        raise OSError(exc.errno, f"sending the peer's FIN from a raw socket: {exc.strerror}") from exc
    if sent != len(packet):
        raise OSError(0, f"sent {sent} of the {len(packet)} bytes of the peer's FIN")
