"""Unix sockets as the kernel's sock_diag netlink interface (UNIX_DIAG) describes them, through pyroute2.

Why sock_diag: a socket's peer, its name, what waits in its queues and how
it is shut down are nowhere in /proc per process; UNIX_DIAG reports them
for every unix socket of the network namespace, by inode, which is what
/proc/PID/fd shows (socket:[INODE]).
"""

import socket
from dataclasses import dataclass

from pyroute2 import DiagSocket

# UDIAG_SHOW_* (include/uapi/linux/unix_diag.h): name, vfs inode, peer, pending connections, queue lengths.
UDIAG_SHOW = 0x01 | 0x02 | 0x04 | 0x08 | 0x10
TCP_LISTEN = 10


@dataclass(frozen=True)
class UnixDiag:
    inode: int
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    listening: bool
    peer: int  # the peer's inode, 0 for none
    name: str | None  # the bound path, "@..." for an abstract name, None when unbound
    shutdown: int  # sk_shutdown: 1 receiving, 2 sending
    pending: int  # a listening socket's connections not yet accepted
    backlog: int  # a listening socket's listen() backlog


def unix_sockets() -> dict[int, UnixDiag]:
    """Every unix socket of the runtime's network namespace, by inode."""
    found = {}
    with DiagSocket() as diag:
        diag.bind()
        for message in diag.get_sock_stats(family=socket.AF_UNIX, show=UDIAG_SHOW):
            attrs = dict(message["attrs"])
            queues = attrs.get("UNIX_DIAG_RQLEN") or {}
            name = attrs.get("UNIX_DIAG_NAME")
            if isinstance(name, bytes):
                name = name.decode(errors="surrogateescape")
            if name is not None and name.startswith("\0"):
                name = "@" + name[1:]
            found[message["udiag_ino"]] = UnixDiag(
                inode=message["udiag_ino"], type=message["udiag_type"],
                listening=message["udiag_state"] == TCP_LISTEN, peer=attrs.get("UNIX_DIAG_PEER", 0) or 0,
                name=name or None, shutdown=attrs.get("UNIX_DIAG_SHUTDOWN", 0) or 0,
                # For a listening socket the queue lengths are its pending connections and its backlog.
                pending=queues.get("udiag_rqueue", 0), backlog=queues.get("udiag_wqueue", 0))
    return found
