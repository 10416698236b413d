"""The network lock: the packets of the TCP connections being dumped are dropped until their sockets are back.

Why: between the moment a dump puts a connection's socket in repair mode
and the moment the restored socket leaves it, a packet of that connection
must reach no socket. One that reached the closed socket would make the
kernel answer with a reset, and the peer would drop the connection; one
that reached the socket half-dumped would change what was already read.
Dropped, it is sent again by the peer's retransmission timer, and gets
through once the restored socket is live: the peer sees only a pause.

How: nftables, through the `nft` command (Debian's nftables package,
scripts/setup.sh), one table of revive's own, `inet revive`, with two sets
of 4-tuples (IPv4 and IPv6: local address, local port, remote address,
remote port; an IPv6 socket's IPv4-mapped connection is IPv4 on the wire,
so in the IPv4 set) and a rule in the input and the output hooks dropping any TCP
packet whose 4-tuple, read from either end, is in a set; before it, a rule
accepting packets with the mark MARK, which only the restore's crafted FIN
segments carry (kernel/tcp_fin.py). Locking adds the
connection's two 4-tuples (one per direction) to its set; unlocking removes
them, and the table when both sets are empty. The state lives in the
kernel, not in this process: the dump kills the process and exits with the
lock held; the image names each locked connection (InetSocket, docs/tcp.md)
and the restore removes exactly those. After a crash of the runtime,
`nft delete table inet revive` removes the whole lock by hand.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TABLE = "revive"
FAMILY = "inet"
MARK = 0x52564956  # SO_MARK of the packets the lock lets through: the peer's FIN a restored socket must receive
_SETS = {socket.AF_INET: ("conn4", "ipv4_addr", "ip"), socket.AF_INET6: ("conn6", "ipv6_addr", "ip6")}


class LockError(Exception):
    """nft failed: its message, one line."""


@dataclass(frozen=True)
class Connection:
    """A TCP connection's 4-tuple as its local end sees it."""

    family: int
    local: str
    local_port: int
    remote: str
    remote_port: int

    def __str__(self) -> str:
        fmt = "[{}]:{}" if self.family == socket.AF_INET6 else "{}:{}"
        return f"{fmt.format(self.local, self.local_port)} <-> {fmt.format(self.remote, self.remote_port)}"


def _table_script() -> str:
    lines = [f"add table {FAMILY} {TABLE}"]
    for set_name, addr_type, _ in _SETS.values():
        lines.append(f"add set {FAMILY} {TABLE} {set_name} "
                     f"{{ type {addr_type} . inet_service . {addr_type} . inet_service; }}")
    for hook in ("input", "output"):
        # Priority -300 (raw), before conntrack (-200): a dropped packet leaves no trace anywhere.
        lines.append(f"add chain {FAMILY} {TABLE} {hook} {{ type filter hook {hook} priority -300; policy accept; }}")
    return "\n".join(lines) + "\n"


def _rules_script() -> str:
    # First: what the restore itself sends to a locked connection (kernel/tcp_fin.py) gets through.
    lines = [f"add rule {FAMILY} {TABLE} {hook} meta mark {MARK:#x} accept" for hook in ("input", "output")]
    for set_name, _, match in _SETS.values():
        for hook in ("input", "output"):
            lines.append(f"add rule {FAMILY} {TABLE} {hook} {match} saddr . tcp sport . {match} daddr . tcp dport "
                         f"@{set_name} drop")
    return "\n".join(lines) + "\n"


def _elements(connections: Iterable[Connection]) -> dict[str, list[str]]:
    """Each connection's two 4-tuples (source . sport . destination . dport of a packet either way), by set.

    Both ends of a connection inside the tree name the same two: each is listed once.
    """
    found: dict[str, dict[str, None]] = {}
    for conn in connections:
        local, remote = ipaddress.ip_address(conn.local), ipaddress.ip_address(conn.remote)
        family = conn.family
        if family == socket.AF_INET6 and local.ipv4_mapped and remote.ipv4_mapped:
            # An IPv6 socket talking IPv4 (::ffff:a.b.c.d): its packets are IPv4 ones, which only conn4 matches.
            local, remote, family = local.ipv4_mapped, remote.ipv4_mapped, socket.AF_INET
        local, remote = local.compressed, remote.compressed
        items = found.setdefault(_SETS[family][0], {})
        items[f"{local} . {conn.local_port} . {remote} . {conn.remote_port}"] = None
        items[f"{remote} . {conn.remote_port} . {local} . {conn.local_port}"] = None
    return {set_name: list(items) for set_name, items in found.items()}


def _nft(script: str, *args: str) -> str:
    import subprocess  # only a dump or restore with TCP connections runs nft: the others do not import it

    try:
        done = subprocess.run(["nft", *args, "-f", "-"], input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LockError("nft not found: install the nftables package (scripts/setup.sh)") from exc
    if done.returncode != 0:
        message = " ".join(done.stderr.split())[:300]
        raise LockError(f"nft: {message}")
    return done.stdout


def _exists() -> bool:
    import subprocess

    done = subprocess.run(["nft", "list", "table", FAMILY, TABLE], capture_output=True, check=False)
    return done.returncode == 0


def lock(connections: Iterable[Connection]) -> None:
    """Drop every TCP packet of the connections, both ways, until unlock."""
    elements = _elements(connections)
    if not elements:
        return
    script = _table_script() + ("" if _exists() else _rules_script())
    for set_name, items in elements.items():
        script += f"add element {FAMILY} {TABLE} {set_name} {{ {', '.join(items)} }}\n"
    _nft(script)
    log.info("network lock: %d connections (nft table %s %s)", sum(map(len, elements.values())) // 2, FAMILY, TABLE)


def unlock(connections: Iterable[Connection]) -> None:
    """Let the connections' packets through again; the table goes with its last connection.

    A connection not in the lock (already released) is no error.
    """
    elements = _elements(connections)
    if not elements or not _exists():
        return
    held = locked()
    script = ""
    for set_name, items in elements.items():
        present = [item for item in items if item in held.get(set_name, ())]
        if present:
            script += f"delete element {FAMILY} {TABLE} {set_name} {{ {', '.join(present)} }}\n"
    if script:
        _nft(script)
    if not any(locked().values()):
        _nft(f"delete table {FAMILY} {TABLE}\n")
    log.info("network lock released for %d connections", sum(map(len, elements.values())) // 2)


def locked() -> dict[str, set[str]]:
    """The 4-tuples the lock holds now, by set, as `source . sport . destination . dport`."""
    if not _exists():
        return {}
    found: dict[str, set[str]] = {}
    import subprocess

    for set_name, _, _ in _SETS.values():
        out = subprocess.run(["nft", "-n", "list", "set", FAMILY, TABLE, set_name], capture_output=True, text=True,
                             check=False).stdout
        body = out.partition("elements = {")[2].partition("}")[0]
        found[set_name] = {" ".join(item.split()) for item in body.split(",") if item.strip()}
    return found
