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
or an abstract name, listening or not, with no connection waiting to be
accepted and no datagram queued: bound again (a stale socket file of the
path, one no socket is bound to any more, replaced; a live one is an error)
with the file mode they had, and listening with their backlog; and
connections accepted from a listening socket of the tree whose client is in
the tree too, made again by a connect and an accept. Refused, naming the fd:
connections waiting on a listening socket, a bound client, a connection
accepted from a listener outside the tree, a name relative to the working
directory, one connected to a socket outside the tree, and descriptors in
flight in a queue (SCM_RIGHTS). A socket with SO_PASSCRED receives the credentials of the
process that sends its queued messages again at restore, not the original
sender's.
"""

import array
import errno
import fcntl
import os
import socket
import stat

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files.base import SETFL_FLAGS, FdTable, FileKindBase, held_entries, refuse_payload
from runtime.images.model import FdKind, FileEntry, UnixSocket
from runtime.kernel import pidfd, sock_diag
from runtime.kernel.procfs.fds import FileKind, OpenFile

SO_PEEK_OFF = 42
TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2
PEEK_MAX = 1 << 22  # larger than any message a socket queue holds (its SO_RCVBUF is capped far below)
FDS_IN_FLIGHT_MAX = 253  # SCM_MAX_FD: the most descriptors one message carries


def _unix_inodes() -> set[int]:
    """The unix sockets of the runtime's network namespace (the dump refuses other namespaces)."""
    with open("/proc/self/net/unix") as f:
        return {int(line.split()[6]) for line in f.readlines()[1:] if len(line.split()) > 6}


class UnixEnd(FileKindBase):
    kind = FdKind.UNIX

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.SOCKET and open_file.inode in _unix_inodes()

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


def save(held: dict[int, tuple[int, int]]) -> tuple[UnixSocket, ...]:
    """Every unix socket of the tree with its peer, shutdowns, options and queue; DumpError for what is refused."""
    if not held:
        return ()
    diag = sock_diag.unix_sockets()
    # A listening socket of the tree, by the name its accepted connections share with it.
    listeners = {}
    for inode in held:
        if inode in diag and diag[inode].listening:
            pid, fd = held[inode]
            mine = pidfd.get_fd(pid, fd)
            with socket.socket(fileno=mine) as sock:
                listeners[_bound_name(pid, f"fd {fd} (socket:[{inode}])", sock)] = inode
    saved = []
    for inode, (pid, fd) in sorted(held.items()):
        what = f"fd {fd} (socket:[{inode}])"
        found = diag.get(inode)
        if found is None or found.type not in TYPES:
            raise DumpError(pid, f"{what}: a unix socket sock_diag does not report: not supported")
        if found.listening and found.pending:
            raise DumpError(pid, f"{what}: a listening unix socket with {found.pending} connections not yet "
                                 "accepted: not supported yet")
        mine = pidfd.get_fd(pid, fd)
        try:
            with socket.socket(fileno=mine) as sock:
                connected = _connected(sock)
                if connected and found.peer not in held:
                    peer = f"socket {found.peer}" if found.peer else "a socket"
                    raise DumpError(pid, f"{what}: connected to {peer} outside the tree: not supported yet")
                name = _bound_name(pid, what, sock)
                listener = listeners.get(name, 0) if connected else 0
                if name and connected and not listener:
                    raise DumpError(pid, f"{what}: a named unix socket connected to another (a bound client, or "
                                         "a connection accepted from a listening socket outside the tree): "
                                         "not supported yet")
                queue = () if found.listening else _peek_queue(pid, what, sock)  # a listener queues connections
                if queue and not connected:
                    raise DumpError(pid, f"{what}: an unconnected unix socket with {len(queue)} datagrams queued: "
                                         "not supported yet")
                saved.append(UnixSocket(
                    id=inode, type=found.type, peer=found.peer if connected else 0, shutdown=found.shutdown,
                    queue=queue,
                    rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    sndbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                    passcred=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED)),
                    name=b"" if listener else name, mode=0 if listener else _socket_file_mode(pid, what, name),
                    listening=found.listening, backlog=found.backlog, listener=listener))
        except OSError as exc:
            raise DumpError(pid, f"{what}: {exc.strerror}") from exc
    return tuple(saved)


def _bound_name(pid: int, what: str, sock: socket.socket) -> bytes:
    """The address it is bound to, raw: a path, or NUL and an abstract name; empty when unbound."""
    name = sock.getsockname()
    raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
    if raw and not raw.startswith((b"/", b"\0")):
        raise DumpError(pid, f"{what}: bound to the relative path {raw!r}, which names no file once the "
                             "working directory changed: not supported")
    return raw


def _socket_file_mode(pid: int, what: str, name: bytes) -> int:
    """A path-bound socket's file mode (0 for an abstract or no name)."""
    if not name.startswith(b"/"):
        return 0
    try:
        return os.stat(name).st_mode
    except OSError as exc:
        raise DumpError(pid, f"{what}: its socket file {name!r}: {exc.strerror} (removed since it was bound): "
                             "not supported") from exc


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
    before = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    messages = []
    try:
        while True:
            try:
                data, ancillary, flags, _ = sock.recvmsg(PEEK_MAX, socket.CMSG_SPACE(4 * FDS_IN_FLIGHT_MAX),
                                                         socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
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
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, before)
    if sock.type == socket.SOCK_STREAM and messages:
        return (b"".join(messages),)
    return tuple(messages)


# -- the restore ------------------------------------------------------------------------------------------------

def groups(sockets: tuple[UnixSocket, ...]) -> list[list[UnixSocket]]:
    """The sockets made together: a pair, or a listener with every connection accepted from it and its client."""
    by_id = {s.id: s for s in sockets}
    grouped: dict[int, list[UnixSocket]] = {}
    for sock in sockets:
        accepted = sock if sock.listener else by_id.get(sock.peer) if sock.peer else None
        if accepted is not None and accepted.listener:
            key = accepted.listener
        elif sock.peer:
            key = min(sock.id, sock.peer)
        else:
            key = sock.id
        grouped.setdefault(key, []).append(sock)
    return list(grouped.values())


def _make_sockets(sockets: list[UnixSocket], made: dict[int, socket.socket], pid: int) -> None:
    """Listeners bound and listening first, then each accepted connection by a connect and an accept, then pairs."""
    by_id = {s.id: s for s in sockets}
    for record in sockets:
        if record.listening or (record.name and not record.peer):
            made[record.id] = socket.socket(socket.AF_UNIX, record.type)
            _bind(made[record.id], record, pid)
    for record in sockets:
        if record.listener:
            client = made[record.peer] = socket.socket(socket.AF_UNIX, record.type)
            client.connect(by_id[record.listener].name)
            made[record.id], _ = made[record.listener].accept()
    for record in sockets:
        if record.id in made:
            continue
        if record.peer:
            made[record.id], made[record.peer] = socket.socketpair(socket.AF_UNIX, record.type)
        else:
            made[record.id] = socket.socket(socket.AF_UNIX, record.type)


def _stale(record: UnixSocket, pid: int) -> bool:
    """A socket file at the name that no socket is bound to any more (a connect is refused); a RestoreError
    if a live socket has it: unlinking it would cut that process off silently."""
    try:
        if not stat.S_ISSOCK(os.lstat(record.name).st_mode):
            return False  # not a socket: bind fails, naming it
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, record.type) as probe:
        try:
            probe.connect(record.name)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # bind will say why
    raise RestoreError(pid, f"unix socket {record.id}: {record.name!r} is bound by a live socket of another "
                            "process")


def _bind(sock: socket.socket, record: UnixSocket, pid: int) -> None:
    """Bound again to its name (a stale socket file of that path replaced), with its file's mode; listening."""
    if record.name.startswith(b"/") and _stale(record, pid):
        os.unlink(record.name)  # what the dumped socket left behind
    sock.bind(record.name)
    if record.mode:
        os.chmod(record.name, stat.S_IMODE(record.mode))
    if record.listening:
        sock.listen(record.backlog)


def make(sockets: list[UnixSocket], ends: list[tuple[FileEntry, int]], pid: int) -> None:
    """A socket, a connected pair, or a listening socket with the connections accepted from it, made once.

    Queues are filled from the peer, shutdowns applied, each open file put at its slot.
    """
    made: dict[int, socket.socket] = {}
    try:
        _make_sockets(sockets, made, pid)
        for record in sockets:
            sock = made[record.id]
            # getsockopt reports twice what setsockopt was given (the kernel's bookkeeping share).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(record.rcvbuf // 2, 1))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(record.sndbuf // 2, 1))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, int(record.passcred))
        for record in sockets:
            if record.queue:
                sender = made.get(record.peer)
                if sender is None:
                    raise RestoreError(pid, f"unix socket {record.id}: {len(record.queue)} queued messages and no "
                                            "peer to send them from")
                # Never blocking: what does not fit the buffers it had is an error, not a hang.
                sender.setblocking(False)
                for message in record.queue:
                    if sender.send(message) != len(message):
                        raise RestoreError(pid, f"unix socket {record.id}: its queue does not fit its buffers")
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
