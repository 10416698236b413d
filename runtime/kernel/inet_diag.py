"""TCP and UDP sockets as the kernel's sock_diag netlink interface (INET_DIAG) describes them, through pyroute2.

Why sock_diag: a listening socket's backlog and the connections waiting on
it, and how a socket is shut down, are in no getsockopt; INET_DIAG reports
them for every TCP and UDP socket of the network namespace, by inode (what
/proc/PID/fd shows as socket:[INODE]), in one dump per family and protocol.
"""

import socket
from dataclasses import dataclass


ALL_STATES = 0xFFFFFFFF
TCP_LISTEN = 10


@dataclass(frozen=True)
class InetDiag:
    inode: int
    protocol: int  # IPPROTO_TCP, IPPROTO_UDP
    state: int  # the TCP state (TCP_ESTABLISHED 1 ... TCP_LISTEN 10); UDP: 1 connected, 7 not
    pending: int  # a listening socket's connections completed and not accepted; else its unread bytes
    backlog: int  # a listening socket's listen() backlog; else its unsent or unacknowledged bytes
    shutdown: int  # 1 receiving, 2 sending shut down
    peer: str = ""  # the remote address and port: what getpeername cannot tell of a TCP socket still connecting
    peer_port: int = 0


def inet_sockets(protocols: tuple[int, ...] = (socket.IPPROTO_TCP, socket.IPPROTO_UDP)) -> dict[int, InetDiag]:
    """Every TCP and UDP socket (IPv4 and IPv6) of the runtime's network namespace, by inode."""
    from pyroute2 import DiagSocket  # a quarter of a second to import: only once a socket is dumped

    found = {}
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for protocol in protocols:
                for message in diag.get_sock_stats(family=family, states=ALL_STATES, protocol=protocol):
                    attrs = dict(message["attrs"])
                    found[message["idiag_inode"]] = InetDiag(
                        inode=message["idiag_inode"], protocol=protocol, state=message["idiag_state"],
                        pending=message["idiag_rqueue"], backlog=message["idiag_wqueue"],
                        shutdown=attrs.get("INET_DIAG_SHUTDOWN", 0) or 0,
                        peer=message["idiag_dst"], peer_port=message["idiag_dport"])
    return found
