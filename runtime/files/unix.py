"""Unix sockets: each socket of the tree saved once (type, peer, what waits in its queue), made again once.

Why the socket is the tree's, like a pipe: socketpair(2) makes two
connected sockets that fork and dup spread over processes; a restore makes
the pair once, in the nearest common ancestor of their holders, before it
forks them (restore/spawn.py), and puts every open file of them at the
number each holder finds it at.

What waits in a receive queue is read without consuming it: the dump takes
a descriptor of the socket with pidfd_getfd (the same open file, while the
tree is stopped), sets SO_PEEK_OFF to 0 and peeks message after message
(one each for datagrams and seqpackets, so their boundaries are kept),
then sets the peek offset back. The restore sends each message again from
the peer, before it applies the shutdowns. Peers, names and shutdowns come
from sock_diag (kernel/sock_diag.py).

Supported: sockets of a pair (stream, datagram, seqpacket) whose both ends
are in the tree, unconnected sockets, and sockets bound to an absolute path
or an abstract name, listening or not: bound again (a stale socket file of
the path, one no socket is bound to any more, replaced; a live one is an
error) with the file mode they had, and listening with their backlog;
connections accepted from a listening socket of the tree whose client is in
the tree too, made again by a connect and an accept; connections waiting to
be accepted whose client is in the tree and has sent nothing yet, made
again by a connect (unix_listen.py); datagrams queued on a bound socket
without a peer of the tree, sent to its name again from an unnamed socket
before it connects (recvfrom then reports no sender). With --ext-unix-sk, a
socket connected to a named socket outside the tree is connected to that
name again (a stream or seqpacket: a new connection, which the outside
server accepts as a new client; the old one cannot be moved to another
process).

Refused, naming the fd: a waiting connection whose client is outside the
tree, or into which its client already sent data (only an accept could read
it); a bound client or a connection accepted from a listener outside the
tree; a name relative to the working directory; one connected to a socket
outside the tree without --ext-unix-sk, or to one with no name even with
it, or with data queued from it that only it could send again (a stream's
bytes, or datagrams on a socket with no name of its own), or whose
connection the outside peer has closed (a peek would take the ECONNRESET it
may have left for the process); descriptors in flight in a queue
(SCM_RIGHTS). A socket with SO_PASSCRED receives the
credentials of the process that sends its queued messages again at restore,
not the original sender's.

Options (SO_PASSCRED, SO_RCVTIMEO, SO_PEEK_OFF, ...): those that differ
from a new unix socket's are read through the same descriptor and set back
on the made socket before its queue is filled (files/sockopts.py, which
also names the ones refused); buffer sizes are kept apart, always set.
"""

import array
import contextlib
import errno
import fcntl
import os
import socket
from dataclasses import dataclass

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files import sockopts, unix_listen
from runtime.files.base import (SETFL_FLAGS, FdTable, FileKindBase, above, held_entries, peek_next, peeking,
                                refuse_payload)
from runtime.images.model import FdKind, FileEntry, UnixSocket
from runtime.kernel import pidfd, sock_diag
from runtime.kernel.procfs.fds import FileKind, OpenFile

TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2
PEEK_MAX = 1 << 22  # larger than any message a socket queue holds (its SO_RCVBUF is capped far below)
FDS_IN_FLIGHT_MAX = 253  # SCM_MAX_FD: the most descriptors one message carries
# The sockets' xattr system.sockprotoname (OpenFile.protocol): stream sockets, and datagram and seqpacket ones.
PROTOCOLS = ("UNIX-STREAM", "UNIX")


class UnixEnd(FileKindBase):
    kind = FdKind.UNIX

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.SOCKET and open_file.protocol in PROTOCOLS

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        return FileEntry(file_id, self.kind, flags=open_file.flags, socket=open_file.inode)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.socket is None:
            raise ImageError(file, f"{field}.socket", "a unix socket's open file names its socket")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        raise RestoreError(pid, f"fd {number}: unix socket {entry.socket} was not made with its peer")

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"socket:[{entry.socket}] (unix)", ""


KIND = UnixEnd()


# -- the dump ---------------------------------------------------------------------------------------------------

def ends_of(tables: dict[int, FdTable], shared: tuple[FileEntry, ...]) -> dict[int, tuple[int, int]]:
    """Each unix socket of the tree: one (pid, fd) holding it."""
    found: dict[int, tuple[int, int]] = {}
    for pid, fd, entry in held_entries(tables, shared):
        if entry.kind is FdKind.UNIX:
            found.setdefault(entry.socket, (pid, fd))
    return found


@dataclass(frozen=True)
class _Seen:
    """What the dump knows of every socket before it saves one."""

    held: dict[int, tuple[int, int]]  # each socket of the tree: one (pid, fd) holding it
    diag: dict[int, sock_diag.UnixDiag]  # every unix socket of the namespace
    listeners: dict[bytes, int]  # the tree's listening sockets by name
    waiting: dict[int, int]  # a client of the tree waiting on a listener of the tree: that listener
    external: bool  # --ext-unix-sk
    defaults: sockopts.Defaults  # the options of a new unix socket of each type


def save(held: dict[int, tuple[int, int]], external: bool = False) -> tuple[UnixSocket, ...]:
    """Every unix socket of the tree with its peer, shutdowns, options and queue; DumpError for what is refused.

    external (--ext-unix-sk): a socket connected to a named one outside the tree is saved with that name.
    """
    if not held:
        return ()
    diag = sock_diag.unix_sockets()
    seen = _Seen(held, diag, unix_listen.listeners(held, diag), unix_listen.waiting_clients(held, diag), external,
                 sockopts.Defaults())
    saved = []
    for inode, (pid, fd) in sorted(held.items()):
        what = f"fd {fd} (socket:[{inode}])"
        found = diag.get(inode)
        if found is None or found.type not in TYPES:
            raise DumpError(pid, f"{what}: a unix socket sock_diag does not report: not supported")
        mine = pidfd.get_fd(pid, fd)
        try:
            with socket.socket(fileno=mine) as sock:
                saved.append(_save_one(pid, what, sock, found, seen))
        except OSError as exc:
            raise DumpError(pid, f"{what}: {exc.strerror}") from exc
    return tuple(saved)


def _save_one(pid: int, what: str, sock: socket.socket, found: sock_diag.UnixDiag, seen: _Seen) -> UnixSocket:
    connected = _connected(sock)
    waiting = found.inode in seen.waiting  # its connection waits on a listener of the tree: no peer yet
    outside = connected and not waiting and found.peer not in seen.held
    name = unix_listen.bound_name(pid, what, sock)
    listener = seen.listeners.get(name, 0) if connected and not outside and not waiting else 0
    if name and connected and not listener and not outside:
        raise DumpError(pid, f"{what}: a named unix socket connected to another (a bound client, or "
                             "a connection accepted from a listening socket outside the tree): "
                             "not supported yet")
    closed = found.shutdown == RCV_SHUTDOWN | SEND_SHUTDOWN and found.type != socket.SOCK_DGRAM
    if outside and not found.peer and closed:
        # A peek would also take the ECONNRESET the closing peer may have left for the process to read.
        raise DumpError(pid, f"{what}: connected to a socket that has closed the connection (an error may wait for "
                             "the process, which the dump cannot read without taking it): not supported")
    options = sockopts.save(sock, seen.defaults, pid, what)  # before the peek moves SO_PEEK_OFF for a while
    queue = () if found.listening else _peek_queue(pid, what, sock)  # a listener queues connections
    external = _external(pid, what, sock, found, name, queue, seen) if outside else b""
    if queue and not connected and not name:
        raise DumpError(pid, f"{what}: an unconnected unix socket with {len(queue)} datagrams queued and no "
                             "name to send them to again: not supported")
    return UnixSocket(
        id=found.inode, type=found.type, peer=found.peer if connected and not outside else 0,
        shutdown=found.shutdown, queue=queue,
        rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sndbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        options=options,
        name=b"" if listener else name, mode=0 if listener else unix_listen.socket_file_mode(pid, what, name),
        listening=found.listening, backlog=found.backlog, listener=listener,
        waiting=found.waiting if found.listening else (), external=external)


def _external(pid: int, what: str, sock: socket.socket, found: sock_diag.UnixDiag, name: bytes,
              queue: tuple[bytes, ...], seen: _Seen) -> bytes:
    """The name of the socket outside the tree it is connected to, to connect to again; DumpError if it cannot be."""
    peer = f"socket {found.peer}" if found.peer else "a socket"
    if name and found.type != socket.SOCK_DGRAM and any(
            other.listening and other.name == name for other in seen.diag.values()):
        raise DumpError(pid, f"{what}: a connection accepted from {name!r} whose client ({peer}) is outside the "
                             "tree, which no restore can connect to again: not supported")
    raw = sock.getpeername()
    remote = os.fsencode(raw) if isinstance(raw, str) else bytes(raw)
    if not remote:
        raise DumpError(pid, f"{what}: connected to {peer} outside the tree, which has no name to connect to "
                             "again: not supported (not even with --ext-unix-sk)")
    if not remote.startswith((b"/", b"\0")):
        raise DumpError(pid, f"{what}: connected to {peer} outside the tree, bound to the relative path "
                             f"{remote!r}: not supported")
    if not seen.external:
        raise DumpError(pid, f"{what}: connected to {peer} ({remote!r}) outside the tree: not supported without "
                             "--ext-unix-sk, with which the restore connects it to that name again")
    if queue and found.type != socket.SOCK_DGRAM:
        raise DumpError(pid, f"{what}: {sum(map(len, queue))} bytes queued from {peer} ({remote!r}) outside the "
                             "tree, which only that socket could send again: not supported")
    if queue and not name:
        raise DumpError(pid, f"{what}: {len(queue)} datagrams queued from {peer} ({remote!r}) outside the tree "
                             "and no name of its own to send them to again: not supported")
    return remote


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return False
        raise
    return True


def _peek_queue(pid: int, what: str, sock: socket.socket) -> tuple[bytes, ...]:
    """Every message of the receive queue, oldest first, the queue left as it was (a stream's bytes: one)."""
    messages = []
    with peeking(sock):
        while (peeked := peek_next(sock, PEEK_MAX, socket.CMSG_SPACE(4 * FDS_IN_FLIGHT_MAX))) is not None:
            data, ancillary, flags, _ = peeked
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:  # the peek installed them in our table
                        os.close(fd)
                    raise DumpError(pid, f"{what}: descriptors in flight in its queue (SCM_RIGHTS): "
                                         "not supported yet")
            if flags & socket.MSG_TRUNC:
                raise DumpError(pid, f"{what}: a message of more than {PEEK_MAX} bytes in its queue")
            if not data:
                break  # a stream whose peer shut down: nothing more
            messages.append(data)
    if sock.type == socket.SOCK_STREAM and messages:
        return (b"".join(messages),)
    return tuple(messages)


# -- the restore ------------------------------------------------------------------------------------------------

def check(sockets: tuple[UnixSocket, ...], file: str) -> None:
    """An ImageError naming the field for an option no unix socket keeps (images/checks.py checks the rest)."""
    for index, record in enumerate(sockets):
        sockopts.check(record.options, socket.AF_UNIX, record.type, file, f"sockets[{index}].options")


def groups(sockets: tuple[UnixSocket, ...]) -> list[list[UnixSocket]]:
    """The sockets made together: a pair, or a listener with every connection accepted from it and its client
    and every client whose connection waits on it."""
    by_id = {s.id: s for s in sockets}
    waiting_on = {client: s.id for s in sockets for client in s.waiting}
    grouped: dict[int, list[UnixSocket]] = {}
    for sock in sockets:
        accepted = sock if sock.listener else by_id.get(sock.peer) if sock.peer else None
        if accepted is not None and accepted.listener:
            key = accepted.listener
        elif sock.id in waiting_on:
            key = waiting_on[sock.id]
        elif sock.peer:
            key = min(sock.id, sock.peer)
        else:
            key = sock.id
        grouped.setdefault(key, []).append(sock)
    return list(grouped.values())


def _make_sockets(sockets: list[UnixSocket], made: dict[int, socket.socket], pid: int) -> None:
    """The named ones and what goes through a listener first (unix_listen.py), then pairs and lone sockets."""
    unix_listen.make_named(sockets, made, pid)
    for record in sockets:
        if record.id in made:
            continue
        if record.peer:
            made[record.id], made[record.peer] = socket.socketpair(socket.AF_UNIX, record.type)
        else:
            made[record.id] = socket.socket(socket.AF_UNIX, record.type)


def _fill_queue(record: UnixSocket, made: dict[int, socket.socket], pid: int) -> None:
    """Its queued messages sent again: from its peer, or (a datagram socket without one) to its name."""
    sender = made.get(record.peer) if record.peer else None
    if sender is None and not record.name:
        raise RestoreError(pid, f"unix socket {record.id}: {len(record.queue)} queued messages and no peer or "
                                "name to send them from")
    with socket.socket(socket.AF_UNIX, record.type) if sender is None else contextlib.nullcontext(sender) as by:
        # Never blocking: what does not fit the buffers it had is an error, not a hang.
        by.setblocking(False)
        for message in record.queue:
            sent = by.send(message) if sender is not None else by.sendto(message, record.name)
            if sent != len(message):
                raise RestoreError(pid, f"unix socket {record.id}: its queue does not fit its buffers")


def _connect_outside(record: UnixSocket, sock: socket.socket, pid: int) -> None:
    """Connected again to the name of the socket outside the tree it was connected to (--ext-unix-sk)."""
    sock.setblocking(False)  # a full backlog is an error, not a hang
    try:
        sock.connect(record.external)
    except OSError as exc:
        raise RestoreError(pid, f"unix socket {record.id}: connecting it again to {record.external!r} outside the "
                                f"tree: {exc.strerror}") from exc


def make(sockets: list[UnixSocket], ends: list[tuple[FileEntry, int]], pid: int) -> None:
    """A socket, a connected pair, or a listening socket with the connections accepted from it, made once.

    Queues are filled from the peer, shutdowns applied, each open file put at its slot.
    """
    made: dict[int, socket.socket] = {}
    # An accepted socket is not a new one: it has its listener's SO_PASSCRED and the like, set back if need be.
    defaults = sockopts.Defaults() if any(record.listener for record in sockets) else None
    try:
        _make_sockets(sockets, made, pid)
        floor = max((slot for _, slot in ends), default=0) + 1
        for key, sock in made.items():  # out of the way of the slots the dup2s below fill
            made[key] = socket.socket(fileno=above(sock.detach(), floor))
        for record in sockets:
            sock = made[record.id]
            # getsockopt reports twice what setsockopt was given (the kernel's bookkeeping share).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(record.rcvbuf // 2, 1))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(record.sndbuf // 2, 1))
            sockopts.apply(sock, record.options, pid, f"unix socket {record.id}",
                           defaults if record.listener else None)
        for record in sockets:
            if record.queue:
                _fill_queue(record, made, pid)
        for record in sockets:  # after the queues: a connected datagram socket takes messages from its peer only
            if record.external:
                _connect_outside(record, made[record.id], pid)
        for record in sockets:
            how = {RCV_SHUTDOWN: socket.SHUT_RD, SEND_SHUTDOWN: socket.SHUT_WR,
                   RCV_SHUTDOWN | SEND_SHUTDOWN: socket.SHUT_RDWR}.get(record.shutdown)
            if how is not None:
                made[record.id].shutdown(how)
        for entry, slot in ends:
            os.dup2(made[entry.socket].fileno(), slot)
            fcntl.fcntl(slot, fcntl.F_SETFL, entry.flags & SETFL_FLAGS)
    except OSError as exc:
        raise RestoreError(pid, f"unix socket {sockets[0].id}: {exc.strerror}") from exc
    finally:
        for sock in made.values():
            sock.close()
