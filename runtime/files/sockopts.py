"""Socket options every family shares: which the dump reads, keeps or refuses, and setting them back.

Why one table: a unix socket, a TCP socket and a UDP socket carry the same
SOL_SOCKET options (timeouts, linger, priority, mark, ...), and inet ones
add the IP, IPv6, TCP and UDP levels. A program sets any of them with one
setsockopt and nothing in /proc shows it; lost, the restored program
behaves differently without a word (a recv that should time out blocks for
ever). So each kind reads every option of the table that applies to its
socket (by level: SOL_SOCKET for all, IPPROTO_IP for IPv4 and IPv6,
IPPROTO_IPV6 for IPv6, IPPROTO_TCP and IPPROTO_UDP by type) through the
runtime's own descriptor of it (pidfd_getfd), compares it with a new socket
of the same family and type (read at the dump, so no kernel default is
written down here), and:

- records it (`SocketOption`) only where it differs, and sets it back on the
  made socket before the kind binds, listens or connects it;
- refuses the dump, naming the fd and the option, where it differs and the
  option is one this table marks as not restored (below), or its value is
  one the image cannot hold (a negative one);
- skips an option a new socket of that family and type cannot read (the
  kernel does not know it there).

Kept: the options of OPTIONS with restored=True. Refused when set: a socket
filter (SO_ATTACH_FILTER, SO_ATTACH_BPF: a classic filter could be read
back, an eBPF one cannot), SO_TIMESTAMPING (its OPT_ID counter and bound
PHC would restart), SO_TXTIME, IP_OPTIONS, IP_MULTICAST_IF, IP_UNICAST_IF,
the IPv6 sticky options (IPV6_PKTINFO, IPV6_HOPOPTS, IPV6_RTHDR,
IPV6_RTHDRDSTOPTS, IPV6_DSTOPTS), TCP_ULP (kTLS state), TCP_FASTOPEN_KEY
and UDP_ENCAP. Not read: SO_RCVBUF and SO_SNDBUF (each kind keeps its
buffer sizes itself: an established TCP connection's must fit its queues),
read-only and kernel-kept values (SO_TYPE, SO_ERROR, which a read would
clear, SO_ACCEPTCONN, SO_PEERCRED, SO_INCOMING_CPU, TCP_INFO, TCP_QUICKACK's
mode, the TCP_REPAIR family the runtime uses itself), and on a TCP
connection TCP_MAXSEG and TCP_WINDOW_CLAMP, which the kernel sets there
itself (TCP repair keeps the MSS). Not visible to any getsockopt, so not
kept: multicast group memberships, reuseport BPF programs, TCP_MD5SIG and
TCP-AO keys.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import socket
import struct
from dataclasses import dataclass

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.images.model import SocketOption
from runtime.kernel.libc import libc

SOL_SOCKET, SOL_IP, SOL_IPV6, SOL_TCP, SOL_UDP = 1, 0, 41, 6, 17
SO_GET_FILTER = 26  # SO_ATTACH_FILTER's number, which getsockopt reads the attached filter with
# A new socket cannot read the option there: the kernel does not know it for that family, type or protocol.
NOT_HERE = (errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EINVAL)
INT_MAX, U32_MAX, U64_MAX = (1 << 31) - 1, (1 << 32) - 1, (1 << 64) - 1
NAME_MAX = 15  # IFNAMSIZ and TCP_CA_NAME_MAX, less the NUL


class Shape(enum.Enum):
    """How an option's value is laid out, read and written."""

    BOOL = "bool"  # an int the kernel reads as a flag: 0 or 1
    INT = "int"  # a C int
    U32 = "u32"
    U64 = "u64"  # SO_MAX_PACING_RATE: 8 bytes when asked for 8
    TIMEVAL = "timeval"  # struct timeval: (seconds, microseconds)
    LINGER = "linger"  # struct linger: (on, seconds)
    NAME = "name"  # a NUL-terminated name of at most 15 characters
    BYTES = "bytes"  # anything else, compared whole; never kept


@dataclass(frozen=True)
class Option:
    name: str  # the constant's name, as the image records it
    level: int
    number: int
    shape: Shape
    restored: bool = True  # False: a value other than a new socket's is refused
    most: int | None = None  # the largest value the kernel takes, where it is smaller than the shape's
    unconnected: bool = False  # read on a TCP socket only when it is not connected (the kernel's own value there)


def _options(level: int, shape: Shape, **numbers: int) -> tuple[Option, ...]:
    return tuple(Option(name, level, number, shape) for name, number in numbers.items())


B, I, BYTES = Shape.BOOL, Shape.INT, Shape.BYTES
# Set back in this order: SO_BINDTODEVICE before anything routes; IP_TOS before SO_PRIORITY, as setting it sets
# the priority its TOS maps to; the rest in any order.
OPTIONS: tuple[Option, ...] = (
    Option("SO_BINDTODEVICE", SOL_SOCKET, 25, Shape.NAME),
    Option("IP_TOS", SOL_IP, 1, Shape.INT, most=255),
    *_options(SOL_SOCKET, B, SO_DEBUG=1, SO_REUSEADDR=2, SO_DONTROUTE=5, SO_BROADCAST=6, SO_KEEPALIVE=9,
              SO_OOBINLINE=10, SO_NO_CHECK=11, SO_REUSEPORT=15, SO_PASSCRED=16, SO_TIMESTAMP=29, SO_PASSSEC=34,
              SO_TIMESTAMPNS=35, SO_RXQ_OVFL=40, SO_WIFI_STATUS=41, SO_NOFCS=43, SO_LOCK_FILTER=44,
              SO_SELECT_ERR_QUEUE=45, SO_ZEROCOPY=60, SO_TIMESTAMP_NEW=63, SO_TIMESTAMPNS_NEW=64,
              SO_PREFER_BUSY_POLL=69, SO_RCVMARK=75, SO_PASSPIDFD=76, SO_RCVPRIORITY=82, SO_PASSRIGHTS=83, SO_INQ=84),
    *_options(SOL_SOCKET, I, SO_PRIORITY=12, SO_RCVLOWAT=18, SO_PEEK_OFF=42, SO_BUSY_POLL=46, SO_BUSY_POLL_BUDGET=70,
              SO_BUF_LOCK=72, SO_RESERVE_MEM=73, SO_TXREHASH=74),
    Option("SO_MARK", SOL_SOCKET, 36, Shape.U32),
    Option("SO_MAX_PACING_RATE", SOL_SOCKET, 47, Shape.U64),
    Option("SO_LINGER", SOL_SOCKET, 13, Shape.LINGER),
    Option("SO_RCVTIMEO", SOL_SOCKET, 20, Shape.TIMEVAL),
    Option("SO_SNDTIMEO", SOL_SOCKET, 21, Shape.TIMEVAL),
    Option("SO_TIMESTAMPING", SOL_SOCKET, 37, BYTES, restored=False),
    Option("SO_TXTIME", SOL_SOCKET, 61, BYTES, restored=False),
    Option("IP_TTL", SOL_IP, 2, I, most=255),
    *_options(SOL_IP, B, IP_RECVOPTS=6, IP_RETOPTS=7, IP_PKTINFO=8, IP_RECVERR=11, IP_RECVTTL=12, IP_RECVTOS=13,
              IP_FREEBIND=15, IP_PASSSEC=18, IP_TRANSPARENT=19, IP_RECVORIGDSTADDR=20, IP_NODEFRAG=22,
              IP_CHECKSUM=23, IP_BIND_ADDRESS_NO_PORT=24, IP_RECVFRAGSIZE=25, IP_RECVERR_RFC4884=26,
              IP_MULTICAST_LOOP=34, IP_MULTICAST_ALL=49),
    Option("IP_MTU_DISCOVER", SOL_IP, 10, I, most=5),
    Option("IP_MINTTL", SOL_IP, 21, I, most=255),
    Option("IP_MULTICAST_TTL", SOL_IP, 33, I, most=255, unconnected=True),
    Option("IP_LOCAL_PORT_RANGE", SOL_IP, 51, Shape.U32),
    Option("IP_OPTIONS", SOL_IP, 4, BYTES, restored=False),
    Option("IP_MULTICAST_IF", SOL_IP, 32, BYTES, restored=False),
    Option("IP_UNICAST_IF", SOL_IP, 50, BYTES, restored=False),
    Option("IPV6_V6ONLY", SOL_IPV6, 26, B),
    *_options(SOL_IPV6, B, IPV6_2292PKTINFO=2, IPV6_2292HOPOPTS=3, IPV6_2292DSTOPTS=4, IPV6_2292RTHDR=5,
              IPV6_2292HOPLIMIT=8, IPV6_FLOWINFO=11, IPV6_MULTICAST_LOOP=19, IPV6_RECVERR=25, IPV6_MULTICAST_ALL=29,
              IPV6_ROUTER_ALERT_ISOLATE=30, IPV6_RECVERR_RFC4884=31, IPV6_FLOWINFO_SEND=33, IPV6_RECVPKTINFO=49,
              IPV6_RECVHOPLIMIT=51, IPV6_RECVHOPOPTS=53, IPV6_RECVRTHDR=56, IPV6_RECVDSTOPTS=58,
              IPV6_RECVPATHMTU=60, IPV6_DONTFRAG=62, IPV6_RECVTCLASS=66, IPV6_AUTOFLOWLABEL=70,
              IPV6_RECVORIGDSTADDR=74, IPV6_TRANSPARENT=75, IPV6_RECVFRAGSIZE=77, IPV6_FREEBIND=78),
    Option("IPV6_UNICAST_HOPS", SOL_IPV6, 16, I, most=255),
    Option("IPV6_MULTICAST_IF", SOL_IPV6, 17, I, unconnected=True),
    Option("IPV6_MULTICAST_HOPS", SOL_IPV6, 18, I, most=255, unconnected=True),
    Option("IPV6_MTU_DISCOVER", SOL_IPV6, 23, I, most=5),
    Option("IPV6_TCLASS", SOL_IPV6, 67, I, most=255),
    Option("IPV6_ADDR_PREFERENCES", SOL_IPV6, 72, I),
    Option("IPV6_MINHOPCOUNT", SOL_IPV6, 73, I, most=255),
    Option("IPV6_UNICAST_IF", SOL_IPV6, 76, I),
    *(Option(name, SOL_IPV6, number, BYTES, restored=False) for name, number in (
        ("IPV6_PKTINFO", 50), ("IPV6_HOPOPTS", 54), ("IPV6_RTHDRDSTOPTS", 55), ("IPV6_RTHDR", 57),
        ("IPV6_DSTOPTS", 59))),
    *_options(SOL_TCP, B, TCP_NODELAY=1, TCP_CORK=3, TCP_THIN_LINEAR_TIMEOUTS=16, TCP_FASTOPEN_CONNECT=30,
              TCP_FASTOPEN_NO_COOKIE=34, TCP_INQ=36),
    Option("TCP_MAXSEG", SOL_TCP, 2, I, unconnected=True),
    Option("TCP_WINDOW_CLAMP", SOL_TCP, 10, I, unconnected=True),
    *_options(SOL_TCP, I, TCP_KEEPIDLE=4, TCP_KEEPINTVL=5, TCP_KEEPCNT=6, TCP_SYNCNT=7, TCP_LINGER2=8,
              TCP_DEFER_ACCEPT=9, TCP_USER_TIMEOUT=18, TCP_FASTOPEN=23, TCP_NOTSENT_LOWAT=25, TCP_SAVE_SYN=27,
              TCP_TX_DELAY=37, TCP_RTO_MAX_MS=44, TCP_RTO_MIN_US=45, TCP_DELACK_MAX_US=46),
    Option("TCP_CONGESTION", SOL_TCP, 13, Shape.NAME),
    Option("TCP_ULP", SOL_TCP, 31, Shape.NAME, restored=False),
    Option("TCP_FASTOPEN_KEY", SOL_TCP, 33, BYTES, restored=False),
    *_options(SOL_UDP, B, UDP_CORK=1, UDP_NO_CHECK6_TX=101, UDP_NO_CHECK6_RX=102, UDP_GRO=104),
    Option("UDP_SEGMENT", SOL_UDP, 103, I, most=0xFFFF),
    Option("UDP_ENCAP", SOL_UDP, 100, I, restored=False),
)
BY_NAME = {option.name: option for option in OPTIONS}
ORDER = {option.name: index for index, option in enumerate(OPTIONS)}

Value = tuple[int, ...] | str | bytes


def applies(option: Option, family: int, kind: int) -> bool:
    """The option's level is one a socket of this family and type has."""
    if option.level == SOL_SOCKET:
        return True
    inet = family in (socket.AF_INET, socket.AF_INET6)
    return {SOL_IP: inet, SOL_IPV6: family == socket.AF_INET6, SOL_TCP: inet and kind == socket.SOCK_STREAM,
            SOL_UDP: inet and kind == socket.SOCK_DGRAM}[option.level]


# -- reading and writing one option -----------------------------------------------------------------------------

_FORMATS = {Shape.BOOL: "i", Shape.INT: "i", Shape.U32: "I", Shape.U64: "Q", Shape.TIMEVAL: "qq", Shape.LINGER: "ii"}


def _read(sock: socket.socket, option: Option) -> Value:
    if option.shape is Shape.NAME:
        return sock.getsockopt(option.level, option.number, NAME_MAX + 1).split(b"\0", 1)[0].decode("ascii",
                                                                                                    "replace")
    if option.shape is Shape.BYTES:
        return sock.getsockopt(option.level, option.number, 256)
    layout = _FORMATS[option.shape]
    raw = sock.getsockopt(option.level, option.number, struct.calcsize(layout))
    if option.shape is Shape.U64 and len(raw) == 4:
        layout = "I"  # the 32-bit form, when the kernel gives no other
    values = struct.unpack(layout, raw[:struct.calcsize(layout)].ljust(struct.calcsize(layout), b"\0"))
    return (int(bool(values[0])),) if option.shape is Shape.BOOL else values


def _write(sock: socket.socket, option: Option, value: Value) -> None:
    if option.shape is Shape.NAME:
        sock.setsockopt(option.level, option.number, value.encode("ascii"))
        return
    if option.shape is Shape.LINGER and not value[0]:
        # Turning linger off keeps the time the kernel had; a getsockopt reports it, so it is set first.
        sock.setsockopt(option.level, option.number, struct.pack("ii", 1, value[1]))
    sock.setsockopt(option.level, option.number, struct.pack(_FORMATS[option.shape], *value))


def _holds(option: Option, value: Value) -> bool:
    """The value is one the image holds and the check accepts (no negative numbers, within the kernel's range)."""
    if option.shape is Shape.NAME:
        return 0 < len(value) <= NAME_MAX and value.isascii() and value.isprintable() and " " not in value
    if option.shape is Shape.BYTES:
        return False
    limits = {Shape.BOOL: (1,), Shape.INT: (option.most if option.most is not None else INT_MAX,),
              Shape.U32: (U32_MAX,), Shape.U64: (U64_MAX,), Shape.TIMEVAL: ((1 << 63) - 1, 999_999),
              Shape.LINGER: (1, INT_MAX)}[option.shape]
    return len(value) == len(limits) and all(0 <= n <= most for n, most in zip(value, limits))


def _shown(value: Value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bytes):
        return f"{len(value)} bytes" if any(value) else "unset"
    return str(value[0]) if len(value) == 1 else repr(value)


def _record(option: Option, value: Value) -> SocketOption:
    return SocketOption(option.name, text=value) if option.shape is Shape.NAME else SocketOption(option.name, value)


def _value(saved: SocketOption) -> Value:
    return saved.text if BY_NAME[saved.name].shape is Shape.NAME else saved.value


# -- the dump ---------------------------------------------------------------------------------------------------

class Defaults:
    """Each option's value on a new socket of a family and type, read once per dump and kind.

    Read rather than written down: the kernel's defaults follow its sysctls
    (tcp_keepalive_time, ip_default_ttl, tcp_congestion_control, ...).
    """

    def __init__(self) -> None:
        self._found: dict[tuple[int, int], dict[str, Value]] = {}

    def of(self, family: int, kind: int) -> dict[str, Value]:
        """Option name -> a new socket's value, for the options such a socket can read."""
        if (family, kind) not in self._found:
            found = {}
            with socket.socket(family, kind) as fresh:
                for option in OPTIONS:
                    if not applies(option, family, kind):
                        continue
                    try:
                        found[option.name] = _read(fresh, option)
                    except OSError as exc:
                        if exc.errno not in NOT_HERE:
                            raise
            self._found[family, kind] = found
        return self._found[family, kind]


def save(sock: socket.socket, defaults: Defaults, pid: int, what: str,
         connected: bool = False) -> tuple[SocketOption, ...]:
    """The options of sock (the runtime's descriptor of it) that differ from a new socket's, in table order.

    A DumpError naming what (the fd) and the option for one the restore would not set back.
    connected: a TCP connection (TCP_MAXSEG and TCP_WINDOW_CLAMP are then the kernel's, not read).
    """
    fresh = defaults.of(sock.family, sock.type)
    saved = []
    for option in OPTIONS:
        if option.name not in fresh or (connected and option.unconnected):
            continue
        try:
            value = _read(sock, option)
        except OSError as exc:
            raise DumpError(pid, f"{what}: reading {option.name}: {exc.strerror}") from exc
        if value == fresh[option.name]:
            continue
        if not option.restored:
            raise DumpError(pid, f"{what}: {option.name} is set ({_shown(value)}; a new socket's is "
                                 f"{_shown(fresh[option.name])}): restoring it is not supported")
        if not _holds(option, value):
            raise DumpError(pid, f"{what}: {option.name} is {_shown(value)}, a value the image cannot hold: "
                                 "not supported")
        saved.append(_record(option, value))
    _refuse_filter(sock, pid, what)
    return tuple(saved)


def _refuse_filter(sock: socket.socket, pid: int, what: str) -> None:
    """A DumpError if a socket filter is attached (SO_ATTACH_FILTER, SO_ATTACH_BPF)."""
    # With no room, the kernel reports the attached classic filter's length in instructions (0: none) or
    # EACCES for an eBPF program; any room makes it copy 8 bytes per instruction, which Python's getsockopt,
    # expecting bytes, would not have made room for: hence ctypes.
    length = ctypes.c_uint32(0)
    if libc.getsockopt(sock.fileno(), SOL_SOCKET, SO_GET_FILTER, None, ctypes.byref(length)) != 0:
        code = ctypes.get_errno()
        if code != errno.EACCES:
            raise DumpError(pid, f"{what}: reading its socket filter: {errno.errorcode.get(code, code)}")
        raise DumpError(pid, f"{what}: an eBPF socket filter is attached (SO_ATTACH_BPF): restoring it is not "
                             "supported")
    if length.value:
        raise DumpError(pid, f"{what}: a socket filter ({length.value} BPF instructions) is attached "
                             "(SO_ATTACH_FILTER): restoring it is not supported")


# -- the restore ------------------------------------------------------------------------------------------------

def value_of(options: tuple[SocketOption, ...], name: str) -> Value | None:
    """The saved value of the option, None where it was a new socket's."""
    for saved in options:
        if saved.name == name:
            return _value(saved)
    return None


def apply(sock: socket.socket, options: tuple[SocketOption, ...], pid: int, what: str,
          defaults: Defaults | None = None) -> None:
    """Each saved option set on the made socket, in table order; a RestoreError naming what and the option.

    defaults: the socket was not new (an accept copied its listener's flags): every other option it can read
    is set back to a new socket's value where it differs.
    """
    wanted = {saved.name: _value(saved) for saved in options}
    if defaults is not None:
        for name, value in defaults.of(sock.family, sock.type).items():
            option = BY_NAME[name]
            if name not in wanted and option.restored and _read(sock, option) != value:
                wanted[name] = value
    for name in sorted(wanted, key=ORDER.__getitem__):
        try:
            _write(sock, BY_NAME[name], wanted[name])
        except OSError as exc:
            raise RestoreError(pid, f"{what}: setting {name} to {_shown(wanted[name])}: {exc.strerror}") from exc


# -- the image --------------------------------------------------------------------------------------------------

def check(options: tuple[SocketOption, ...], family: int, kind: int, file: str, field: str) -> None:
    """An ImageError naming the field unless each option is a kept one of this socket, once, in table order,
    with a value of its shape the kernel takes."""
    previous = -1
    for index, saved in enumerate(options):
        where = f"{field}[{index}]"
        option = BY_NAME.get(saved.name)
        if option is None or not option.restored or not applies(option, family, kind):
            raise ImageError(file, f"{where}.name", f"{saved.name!r} is no option a socket of family {family} "
                                                    f"type {kind} keeps")
        if ORDER[saved.name] <= previous:
            raise ImageError(file, f"{where}.name", f"{saved.name} is out of order or twice")
        previous = ORDER[saved.name]
        if option.shape is Shape.NAME:
            if saved.value or not _holds(option, saved.text):
                raise ImageError(file, f"{where}.text", f"{saved.text!r} is no name {saved.name} takes")
        elif saved.text or not _holds(option, saved.value):
            raise ImageError(file, f"{where}.value", f"{list(saved.value)} is no value {saved.name} takes")


def describe(options: tuple[SocketOption, ...]) -> str:
    """NAME=VALUE ... for `show`, "" for none."""
    return " ".join(f"{saved.name}={_shown(_value(saved))}" for saved in options)
