"""The runtime's end of the parasite's command socket: accept, request/reply, fds, page splicing.

Why every wait polls: the parasite is code running inside somebody else's
process. If it faults, the kernel stops the task for us (we trace it) and
its socket end stays open, so a blocking recv would wait forever. Each wait
therefore polls with a short timeout and asks the infection, in between,
whether the task has stopped or died (check_task raises if so).

The socket is SOCK_SEQPACKET in the abstract namespace: message boundaries
are kept (one request, one reply), nothing is left on the file system, and
SCM_RIGHTS carries descriptors both ways.
"""

import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from runtime import faults
from runtime.errors import InfectError

POLL_SLICE_MS = 20
ACCEPT_TIMEOUT = 5.0
REPLY_TIMEOUT = 30.0


@dataclass
class Channel:
    pid: int
    listener: socket.socket
    check_task: Callable[[], None]  # raises InfectError if the task stopped or died
    conn: socket.socket | None = None

    @classmethod
    def listen(cls, pid: int, check_task: Callable[[], None]) -> "Channel":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            listener.bind(b"\0revive-parasite-" + os.urandom(8).hex().encode())
            listener.listen(1)
        except OSError:
            listener.close()
            raise
        return cls(pid, listener, check_task)

    @property
    def address(self) -> bytes:
        """The abstract socket name, leading NUL included, as sun_path holds it."""
        return self.listener.getsockname()

    def accept(self) -> None:
        self.wait_readable(self.listener.fileno(), ACCEPT_TIMEOUT, "connect")
        self.conn, _ = self.listener.accept()
        self.listener.close()

    def wait_readable(self, fd: int, timeout: float, what: str) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        waited = 0.0
        while not poller.poll(POLL_SLICE_MS):
            self.check_task()
            waited += POLL_SLICE_MS / 1000
            if waited >= timeout:
                raise InfectError(self.pid, f"parasite did not {what} within {timeout:.0f} s")

    def send(self, request: bytes, fd: int | None = None) -> None:
        fds = [fd] if fd is not None else []
        try:
            socket.send_fds(self.conn, [request], fds)
        except OSError as exc:
            raise InfectError(self.pid, f"parasite socket closed while sending a request: {exc}") from exc
        faults.point("infect.command")

    def receive(self, size: int, what: str, maxfds: int = 0) -> tuple[bytes, list[int]]:
        """One message of at most size bytes (and its fds); EOF is an error naming what was expected."""
        self.wait_readable(self.conn.fileno(), REPLY_TIMEOUT, f"send {what}")
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.conn, size, maxfds)
        except OSError as exc:
            raise InfectError(self.pid, f"parasite socket failed while waiting for {what}: {exc}") from exc
        if not data:
            for fd in fds:
                os.close(fd)
            self.check_task()
            raise InfectError(self.pid, f"parasite closed its socket instead of sending {what}")
        return data, fds

    def splice(self, pipe_r: int, out_fd: int, nbytes: int) -> int:
        """Move nbytes from the pipe the parasite fills into out_fd, in the kernel; bytes moved."""
        moved = 0
        while moved < nbytes:
            self.wait_readable(pipe_r, REPLY_TIMEOUT, "page data")
            n = os.splice(pipe_r, out_fd, nbytes - moved)
            if n == 0:
                break
            moved += n
            faults.point("infect.pages")
        return moved

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
