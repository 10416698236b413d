"""Unix sockets as the kernel's sock_diag netlink interface (UNIX_DIAG) describes them, through pyroute2.

Why sock_diag: a socket's peer, its name, what waits in its queues, the
connections waiting on a listener and how it is shut down are nowhere in
/proc per process; UNIX_DIAG reports them for every unix socket of the
network namespace, by inode, which is what /proc/PID/fd shows
(socket:[INODE]).

What it does not show: a connection waiting to be accepted is a socket the
kernel made for the listener's side (the embryo), with no inode and in no
table sock_diag walks. The listener lists its clients' inodes
(UNIX_DIAG_ICONS, which pyroute2 hands over as undecoded hex), and a
client's write-queue figure (sk_wmem_alloc) tells whether what it sent
still waits, unread, in the embryo's queue: the memory that data holds,
not its byte count, which only an accept could read.
"""

import array
import socket
from dataclasses import dataclass


# UDIAG_SHOW_* (include/uapi/linux/unix_diag.h): name, vfs inode, peer, pending connections (ICONS), queue lengths.
UDIAG_SHOW = 0x01 | 0x02 | 0x04 | 0x08 | 0x10
TCP_LISTEN = 10


@dataclass(frozen=True)
class UnixDiag:
    inode: int
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    listening: bool
    peer: int  # the peer's inode; 0 for none, and for a connection still waiting on its listener
    name: bytes  # the bound address: a path, or NUL and an abstract name (cut at a NUL inside it); empty: unbound
    shutdown: int  # sk_shutdown: 1 receiving, 2 sending
    backlog: int  # a listening socket's listen() backlog
    waiting: tuple[int, ...] = ()  # a listening socket's waiting connections: their clients' inodes, oldest first
    unread: int = 0  # the memory what it sent and its peer has not read holds (sk_wmem_alloc); 0: nothing


def unix_sockets() -> dict[int, UnixDiag]:
    """Every unix socket of the runtime's network namespace, by inode."""
    from pyroute2 import DiagSocket  # a quarter of a second to import: only once a socket is dumped

    found = {}
    with DiagSocket() as diag:
        diag.bind()
        for message in diag.get_sock_stats(family=socket.AF_UNIX, show=UDIAG_SHOW):
            attrs = dict(message["attrs"])
            queues = attrs.get("UNIX_DIAG_RQLEN") or {}
            name = attrs.get("UNIX_DIAG_NAME") or b""
            name = name.encode(errors="surrogateescape") if isinstance(name, str) else bytes(name)
            if name and "UNIX_DIAG_VFS" not in attrs and not name.startswith(b"\0"):
                name = b"\0" + name  # abstract (no file): pyroute2 decodes it as a C string, without its NUL
            listening = message["udiag_state"] == TCP_LISTEN
            found[message["udiag_ino"]] = UnixDiag(
                inode=message["udiag_ino"], type=message["udiag_type"], listening=listening,
                peer=attrs.get("UNIX_DIAG_PEER", 0) or 0,
                name=name,
                shutdown=attrs.get("UNIX_DIAG_SHUTDOWN", 0) or 0,
                # For a listening socket the write-queue figure is its backlog (the read one: len(waiting)).
                backlog=queues.get("udiag_wqueue", 0) if listening else 0,
                waiting=_inodes(attrs.get("UNIX_DIAG_ICONS")),
                unread=0 if listening else queues.get("udiag_wqueue", 0))
    return found


def _inodes(icons: str | bytes | None) -> tuple[int, ...]:
    """UNIX_DIAG_ICONS: an array of u32 inodes, which pyroute2 gives as "65:e6:25:00:..." (or raw bytes)."""
    if not icons:
        return ()
    raw = bytes.fromhex(icons.replace(":", "")) if isinstance(icons, str) else bytes(icons)
    inodes = array.array("I")
    inodes.frombytes(raw[:len(raw) - len(raw) % inodes.itemsize])
    return tuple(inodes)
