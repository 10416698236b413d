"""Named and listening unix sockets: their names, and the connections that go through a listener of the tree.

Why apart from unix.py: a name ties a socket to the file system (or to the
abstract namespace) and a listener ties sockets to each other by that name;
they are made by bind, listen and connect rather than socketpair, in an
order that matters.

Dump: a socket's name comes from getsockname through its pidfd_getfd
descriptor (raw: a path, or NUL and an abstract name), a path's socket
file its mode; a listener's connections not yet accepted from sock_diag
(UNIX_DIAG_ICONS: their clients' inodes, oldest first). A waiting
connection is kept when its client is a socket of the tree that has sent
nothing into it yet. What a client sent into a connection not yet accepted
waits in the queue of the listener's half of it, which has no descriptor
and which nothing but an accept reads (sock_diag shows only that it is
there, as the memory it holds, kernel/sock_diag.py): that case is refused
rather than the data lost, and so is a waiting connection whose client is
outside the tree (or has closed it), which the tree would lose.

Restore: the listeners and the other named sockets are bound again (a stale
socket file replaced) and listen first; then each accepted connection is
made by a connect and an accept; then each waiting connection by a connect
alone, oldest first, so that it waits in the backlog again and the
listener's next accept returns them in the order it would have. The server
sees the restoring process as the connecting one (SO_PEERCRED).
"""

import os
import socket
import stat

from runtime.errors import DumpError, RestoreError
from runtime.images.model import UnixSocket
from runtime.kernel import pidfd
from runtime.kernel.sock_diag import UnixDiag

# -- the dump ---------------------------------------------------------------------------------------------------


def bound_name(pid: int, what: str, sock: socket.socket) -> bytes:
    """The address it is bound to, raw: a path, or NUL and an abstract name; empty when unbound."""
    name = sock.getsockname()
    raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
    if raw and not raw.startswith((b"/", b"\0")):
        raise DumpError(pid, f"{what}: bound to the relative path {raw!r}, which names no file once the "
                             "working directory changed: not supported")
    return raw


def socket_file_mode(pid: int, what: str, name: bytes) -> int:
    """A path-bound socket's file mode (0 for an abstract or no name)."""
    if not name.startswith(b"/"):
        return 0
    try:
        return os.stat(name).st_mode
    except OSError as exc:
        raise DumpError(pid, f"{what}: its socket file {name!r}: {exc.strerror} (removed since it was bound): "
                             "not supported") from exc


def listeners(held: dict[int, tuple[int, int]], diag: dict[int, UnixDiag]) -> dict[bytes, int]:
    """The listening sockets of the tree by name (which the connections accepted from them share)."""
    found = {}
    for inode, (pid, fd) in held.items():
        if inode in diag and diag[inode].listening:
            with socket.socket(fileno=pidfd.get_fd(pid, fd)) as sock:
                found[bound_name(pid, f"fd {fd} (socket:[{inode}])", sock)] = inode
    return found


def waiting_clients(held: dict[int, tuple[int, int]], diag: dict[int, UnixDiag]) -> dict[int, int]:
    """Each client of the tree whose connection waits on a listener of the tree: that listener's inode.

    DumpError for a waiting connection the restore could not make again as it is.
    """
    found = {}
    for inode, (pid, fd) in held.items():
        listener = diag.get(inode)
        if listener is None or not listener.listening:
            continue
        what = f"fd {fd} (socket:[{inode}])"
        for client in listener.waiting:
            if client == 0:
                raise DumpError(pid, f"{what}: a listening unix socket with a connection not yet accepted whose "
                                     "client has closed it: dump again once it is accepted")
            if client not in held:
                raise DumpError(pid, f"{what}: a listening unix socket with a connection from socket {client} "
                                     "outside the tree not yet accepted: dump again once it is accepted")
            unread = diag[client].unread if client in diag else 0
            if unread:
                client_pid, client_fd = held[client]
                raise DumpError(client_pid, f"fd {client_fd} (socket:[{client}]): connected to the listening "
                                            f"socket:[{inode}] of the tree, not yet accepted, with data sent into "
                                            f"the connection ({unread} bytes of socket memory) that only an "
                                            "accept could read: dump again once it is accepted")
            found[client] = inode
    return found


# -- the restore ------------------------------------------------------------------------------------------------

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


def make_named(sockets: list[UnixSocket], made: dict[int, socket.socket], pid: int) -> None:
    """The named sockets bound and the listeners listening, then each accepted and each waiting connection."""
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
        for waiting in record.waiting:
            client = made[waiting] = socket.socket(socket.AF_UNIX, record.type)
            client.setblocking(False)  # a full backlog is an error, not a hang
            client.connect(record.name)
