"""/proc/sysvipc/shm: every SysV shared memory segment of the runtime's IPC namespace, as the kernel lists it.

Why this file and not shmctl(IPC_STAT) per id: one read lists every
segment with its attach count, whatever its permissions. A dump refuses
processes of another IPC namespace, so the runtime's list is theirs.
"""

from dataclasses import dataclass

SHM_LIST = "/proc/sysvipc/shm"

SHM_DEST = 0o1000  # in perms: IPC_RMID was done while attached
SHM_LOCKED = 0o2000  # in perms: SHM_LOCK


@dataclass(frozen=True)
class ShmSegment:
    """One line of /proc/sysvipc/shm (the times, pids, rss and swap left out)."""

    key: int  # unsigned (the kernel prints key_t signed)
    shmid: int
    perms: int  # the permission bits, with SHM_DEST and SHM_LOCKED
    size: int
    nattch: int  # how many mappings attach it, in every process: a split attach counts once per VMA
    uid: int
    gid: int
    cuid: int
    cgid: int

    @property
    def removed(self) -> bool:
        return bool(self.perms & SHM_DEST)

    @property
    def locked(self) -> bool:
        return bool(self.perms & SHM_LOCKED)


def parse_shm(text: str) -> dict[int, ShmSegment]:
    """The segments of the text of /proc/sysvipc/shm, by shmid."""
    lines = text.splitlines()
    columns = lines[0].split() if lines else []
    segments = {}
    for line in lines[1:]:
        row = dict(zip(columns, line.split()))
        segment = ShmSegment(int(row["key"]) & 0xFFFFFFFF, int(row["shmid"]), int(row["perms"], 8), int(row["size"]),
                             int(row["nattch"]), int(row["uid"]), int(row["gid"]), int(row["cuid"]), int(row["cgid"]))
        segments[segment.shmid] = segment
    return segments


def read_shm() -> dict[int, ShmSegment]:
    with open(SHM_LIST, encoding="ascii") as f:
        return parse_shm(f.read())
