"""Credentials and task state from /proc/PID/status.

Why status: it is the one file that prints all four uids and gids, the
supplementary groups, the five capability sets and no_new_privs, and also
the tracer, the scheduler state and the thread count the dump checks before
touching a process.
"""

from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.images.model import Creds
from runtime.kernel.procfs.files import read_text


@dataclass(frozen=True)
class Status:
    name: str
    state: str  # one letter: R S D T t Z X ...
    tgid: int
    ppid: int
    tracer_pid: int
    threads: int
    creds: Creds
    sig_pending: int  # thread-private pending signals (SigPnd), bit (sig - 1)
    shd_pending: int  # process-wide pending signals (ShdPnd)
    sig_blocked: int
    seccomp: int  # SECCOMP_MODE_*: 0 none, 1 strict, 2 filter
    speculation: tuple[str, str]  # Speculation_Store_Bypass, SpeculationIndirectBranch as printed
    thread_features: str  # x86_Thread_features (shadow stack ...), "" when the kernel prints none


def parse_status(pid: int, text: str) -> Status:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()

    def get(key: str) -> str:
        try:
            return fields[key]
        except KeyError:
            raise ProcfsError(pid, f"/proc/{pid}/status has no {key} line") from None

    def ids(key: str) -> tuple[int, int, int, int]:
        values = tuple(int(v) for v in get(key).split())
        if len(values) != 4:
            raise ProcfsError(pid, f"/proc/{pid}/status {key}: expected 4 ids, got {get(key)!r}")
        return values

    creds = Creds(
        uids=ids("Uid"),
        gids=ids("Gid"),
        groups=tuple(int(g) for g in get("Groups").split()),
        cap_inheritable=int(get("CapInh"), 16),
        cap_permitted=int(get("CapPrm"), 16),
        cap_effective=int(get("CapEff"), 16),
        cap_bounding=int(get("CapBnd"), 16),
        cap_ambient=int(get("CapAmb"), 16),
        no_new_privs=get("NoNewPrivs") == "1",
    )
    return Status(
        name=get("Name"),
        state=get("State")[:1],
        tgid=int(get("Tgid")),
        ppid=int(get("PPid")),
        tracer_pid=int(get("TracerPid")),
        threads=int(get("Threads")),
        creds=creds,
        sig_pending=int(get("SigPnd"), 16),
        shd_pending=int(get("ShdPnd"), 16),
        sig_blocked=int(get("SigBlk"), 16),
        seccomp=int(get("Seccomp")),
        speculation=(fields.get("Speculation_Store_Bypass", ""), fields.get("SpeculationIndirectBranch", "")),
        thread_features=fields.get("x86_Thread_features", ""),
    )


def read_status(pid: int) -> Status:
    return parse_status(pid, read_text(pid, "status"))


def read_thread_status(pid: int, tid: int) -> Status:
    """/proc/PID/task/TID/status: the per-thread fields (credentials, seccomp, signal masks) of that thread."""
    return parse_status(tid, read_text(pid, f"task/{tid}/status"))
