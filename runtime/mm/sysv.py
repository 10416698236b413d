"""SysV shared memory segments the tree attaches: saved once, made again with their id and key, attached again.

Why apart from mm/shmem.py: a segment is found by its id and its key, not
through a file or a descriptor. A process that comes later (shmget with the
key, shmat with an id it was told) must find the restored segment, so it
comes back under the same id and key, with its owner, creator, mode and
lock. Its data are saved as any shared memory object's (shmem.save, through
/proc/PID/map_files, which opens the segment's file without attaching it:
the segment's attach count, times and last pid stay as they were, so a
--leave-running dump leaves it untouched); an attach is a Vma of kind SYSV
whose shmem is the shmid (the inode of the segment's file).

Dump: /proc/sysvipc/shm says what maps does not (owner, creator, mode,
SHM_DEST, SHM_LOCKED, nattch). nattch counts every VMA that attaches the
segment, in every process, so a segment also attached outside the tree is
told by its count, and refused: its id could not be made again while that
process holds it. An attach must be whole (its VMAs, split by mprotect,
cover the segment from offset 0), since the restorer's one shmat maps the
whole segment. A dump that kills the tree removes each segment the tree
held once the tree is gone: its contents are in the image, and the restore
needs its id free, as it needs the PIDs.

Restore: before anything is made, each id must be free, and its slot (the
kernel allocates the id's low 15 bits as an index), and the key of a
segment not marked for removal unused. Root writes the id into
/proc/sys/kernel/shm_next_id (CAP_CHECKPOINT_RESTORE is enough) and the
next shmget of the namespace gets it; the kernel then sets the value back
to -1 itself and refuses to be written -1, so a shmget that fails is
followed by a throwaway segment that uses the value up. shmget runs with
the creator's effective ids (raw setresuid/setresgid: this thread only),
the data go in through an attach of the runtime's, detached at once, then
IPC_SET gives owner and mode, SHM_LOCK the lock. Each process's restorer
attaches the segment at its address (map_vmas: shmat). A segment marked
for removal at dump is removed again (IPC_RMID) once every process has
attached it: its key reads 0 again and it goes with its last detach. A
failed restore removes every segment it made.
"""

import collections
import contextlib
import ctypes
import errno
import io
import logging
import os
from dataclasses import replace

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError, RestoreError
from runtime.images.model import PAGE_SIZE, SharedMemory, SysvSegment, Vma, VmaKind
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs import sysvipc
from runtime.kernel.procfs.maps import SYSV_NAME
from runtime.mm import shmem

log = logging.getLogger(__name__)

IPC_PRIVATE = 0
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
IPC_RMID, IPC_SET, IPC_STAT = 0, 1, 2
SHM_LOCK = 11
SHM_RDONLY = 0o10000
PERMISSION_BITS = 0o777
SHM_NEXT_ID = "/proc/sys/kernel/shm_next_id"
IPCMNI = 32768  # ipc_idr_alloc: the id's low 15 bits are its slot, the rest a sequence number


class _IpcPerm(ctypes.Structure):
    """struct ipc64_perm (x86_64), as glibc's shmctl passes it."""

    _fields_ = [("key", ctypes.c_int32), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("cuid", ctypes.c_uint32), ("cgid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("pad1", ctypes.c_uint16), ("seq", ctypes.c_uint16), ("pad2", ctypes.c_uint16),
                ("unused1", ctypes.c_uint64), ("unused2", ctypes.c_uint64)]


class _ShmidDs(ctypes.Structure):
    """struct shmid64_ds (x86_64)."""

    _fields_ = [("shm_perm", _IpcPerm), ("shm_segsz", ctypes.c_uint64), ("shm_atime", ctypes.c_int64),
                ("shm_dtime", ctypes.c_int64), ("shm_ctime", ctypes.c_int64), ("shm_cpid", ctypes.c_int32),
                ("shm_lpid", ctypes.c_int32), ("shm_nattch", ctypes.c_uint64), ("unused4", ctypes.c_uint64),
                ("unused5", ctypes.c_uint64)]


_libc.shmget.argtypes = (ctypes.c_int32, ctypes.c_size_t, ctypes.c_int)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_libc.shmdt.argtypes = (ctypes.c_void_p,)
_libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_ShmidDs))


def _pages(size: int) -> int:
    """What one attach of a segment of size bytes maps: whole pages."""
    return arch.align_up(size, PAGE_SIZE)


def _what(shmid: int, key: int) -> str:
    return f"SysV shared memory segment {shmid} (key {key:#010x})"


# -- dump -------------------------------------------------------------------------------------

def check_attaches(pid: int, vmas: tuple[Vma, ...], segments: dict[int, sysvipc.ShmSegment]) -> None:
    """Each attach is of a listed segment and whole: its VMAs, one after the other, cover it from offset 0."""
    attached = [v for v in vmas if v.kind is VmaKind.SYSV]
    index = 0
    while index < len(attached):
        first = attached[index]
        where = f"mapping {first.start:#x}-{first.end:#x} {first.name}"
        segment = segments.get(first.shmem)
        if segment is None:
            raise DumpError(pid, f"{where}: /proc/sysvipc/shm lists no SysV segment {first.shmem}")
        base = first.start - first.offset
        end = base + _pages(segment.size)
        covered = first.start
        while (index < len(attached) and covered < end and attached[index].shmem == first.shmem
               and attached[index].start == covered and attached[index].offset == covered - base):
            covered = attached[index].end
            index += 1
        if first.offset or covered != end:
            raise DumpError(pid, f"{where}: a part of an attach of {_what(segment.shmid, segment.key)}, the rest "
                                 "unmapped or moved: not supported yet (the restore attaches whole segments)")


def check_held_inside(vmas: dict[int, tuple[Vma, ...]], segments: dict[int, sysvipc.ShmSegment]) -> None:
    """Every attach of each segment is the tree's: its nattch counts each VMA attaching it, in every process."""
    counts = collections.Counter(v.shmem for mapped in vmas.values() for v in mapped if v.kind is VmaKind.SYSV)
    for shmid, count in sorted(counts.items()):
        segment = segments[shmid]
        if segment.nattch != count:
            pid = next(p for p, mapped in vmas.items() if any(v.shmem == shmid for v in mapped))
            raise DumpError(pid, f"{_what(shmid, segment.key)} is attached {segment.nattch} times, {count} of "
                                 "them in the dump: another process attaches it too: not supported (its id cannot "
                                 "be made again while that process holds it)")


def is_segment(reach: shmem.Reach) -> bool:
    return SYSV_NAME.match(reach.name) is not None


def save(reach: shmem.Reach, segment: sysvipc.ShmSegment, out: io.FileIO) -> SharedMemory:
    """The segment's record (its key as its attaches' name shows it) and its data, written to out."""
    saved = shmem.save(reach, segment.shmid, out)
    key = int(SYSV_NAME.match(reach.name).group(1), 16)
    info = SysvSegment(key, segment.uid, segment.gid, segment.cuid, segment.cgid, segment.removed, segment.locked)
    return replace(saved, path=None, mode=segment.perms & PERMISSION_BITS, sysv=info)


def remove_dumped(objects: tuple[SharedMemory, ...]) -> None:
    """After a dump killed the tree: its segments go with it (one marked for removal went with its last detach)."""
    for obj in objects:
        if obj.sysv is not None and not obj.sysv.removed:
            if _libc.shmctl(obj.id, IPC_RMID, None) != 0:
                log.warning("%s: removing it after the dump: %s", _what(obj.id, obj.sysv.key),
                            os.strerror(ctypes.get_errno()))


# -- restore ----------------------------------------------------------------------------------

def check_free(obj: SharedMemory, pid: int, segments: dict[int, sysvipc.ShmSegment]) -> None:
    """The segment's id, its slot and (unless it was marked for removal) its key are free; pid: who attaches it."""
    what = _what(obj.id, obj.sysv.key)
    taken = segments.get(obj.id)
    if taken is not None:
        raise RestoreError(pid, f"{what}: the id is in use by a segment of key {taken.key:#010x} (nattch "
                                f"{taken.nattch}); if it is the dumped one, remove it first (ipcrm -m {obj.id})")
    slot = next((s for s in segments.values() if s.shmid % IPCMNI == obj.id % IPCMNI), None)
    if slot is not None:
        raise RestoreError(pid, f"{what}: segment {slot.shmid} holds the id's slot ({obj.id % IPCMNI})")
    if obj.sysv.key != IPC_PRIVATE and not obj.sysv.removed:
        holder = next((s for s in segments.values() if s.key == obj.sysv.key), None)
        if holder is not None:
            raise RestoreError(pid, f"{what}: the key is in use by segment {holder.shmid}")


def create(obj: SharedMemory, data: io.FileIO, pid: int) -> None:
    """The segment again, with obj's id, key, creator, owner, mode, lock and data; pid: who attaches it."""
    info = obj.sysv
    what = _what(obj.id, info.key)
    key = info.key
    if info.removed and key != IPC_PRIVATE and any(s.key == key for s in sysvipc.read_shm().values()):
        # Marked for removal, it had no key any more: only its attaches' name (/SYSV<key>) changes.
        log.warning("%s: the key is in use again; made with IPC_PRIVATE (maps names it /SYSV00000000)", what)
        key = IPC_PRIVATE
    _write_next_id(obj.id, pid, what)
    with _effective_ids(info.cuid, info.cgid):
        got = _libc.shmget(ctypes.c_int32(key), obj.size, IPC_CREAT | IPC_EXCL | obj.mode)
        err = ctypes.get_errno()
    if got < 0:
        _use_up_next_id()
        raise RestoreError(pid, f"{what}: shmget: {os.strerror(err)}")
    if got != obj.id:
        remove(got)
        raise RestoreError(pid, f"{what}: shmget made segment {got} instead (another one was made meanwhile)")
    try:
        _fill(obj, data, pid, what)
        _set_owner(obj, pid, what)
        if info.locked and _libc.shmctl(obj.id, SHM_LOCK, None) != 0:
            raise RestoreError(pid, f"{what}: SHM_LOCK: {os.strerror(ctypes.get_errno())}")
    except BaseException:
        remove(obj.id)
        raise


def remove(shmid: int) -> None:
    """IPC_RMID: the segment goes now, or with its last detach; one already gone is no error."""
    if _libc.shmctl(shmid, IPC_RMID, None) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.EIDRM):
        log.warning("removing SysV shared memory segment %d: %s", shmid, os.strerror(ctypes.get_errno()))


@contextlib.contextmanager
def removed_on_failure():
    """A list for the segments a restore makes: if the block fails, each is removed (its processes are gone)."""
    made: list[SharedMemory] = []
    try:
        yield made
    except BaseException:
        for obj in made:
            remove(obj.id)
        raise


def finish(objects: list[SharedMemory]) -> None:
    """Once every process has attached its segments: those marked for removal at dump are marked again."""
    for obj in objects:
        if obj.sysv.removed:
            remove(obj.id)


def _write_next_id(shmid: int, pid: int, what: str) -> None:
    try:
        with open(SHM_NEXT_ID, "w") as f:
            f.write(str(shmid))
    except OSError as exc:
        raise RestoreError(pid, f"{what}: cannot choose its id through {SHM_NEXT_ID}: {exc.strerror} "
                                "(needs CAP_CHECKPOINT_RESTORE)") from exc


def _use_up_next_id() -> None:
    """shm_next_id is still set after a failed shmget, and the namespace's next segment would get it."""
    with open(SHM_NEXT_ID) as f:
        if int(f.read()) < 0:
            return
    throwaway = _libc.shmget(IPC_PRIVATE, 1, 0o600)
    if throwaway < 0:
        log.warning("%s is left set: %s", SHM_NEXT_ID, os.strerror(ctypes.get_errno()))
        return
    remove(throwaway)


@contextlib.contextmanager
def _effective_ids(uid: int, gid: int):
    """This thread's effective uid and gid for the block (shmget records them as the creator's).

    Raw system calls: glibc's setresuid would change every thread. The gid
    goes first and comes back last: setting it needs CAP_SETGID, which a
    non-zero euid drops from the effective set (back to 0 brings it again).
    """
    euid, egid = os.geteuid(), os.getegid()
    if (uid, gid) == (euid, egid):
        yield
        return
    _set_effective(arch.NR_SETRESGID, gid)
    try:
        _set_effective(arch.NR_SETRESUID, uid)
        try:
            yield
        finally:
            _set_effective(arch.NR_SETRESUID, euid)
    finally:
        _set_effective(arch.NR_SETRESGID, egid)


def _set_effective(number: int, value: int) -> None:
    unchanged = ctypes.c_int(-1)
    if _libc.syscall(number, unchanged, ctypes.c_uint32(value), unchanged) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setting the effective id {value}: {os.strerror(err)}")


def _fill(obj: SharedMemory, data: io.FileIO, pid: int, what: str) -> None:
    """The saved extents written through an attach of the runtime's own (its file, opened through map_files)."""
    address = _libc.shmat(obj.id, None, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise RestoreError(pid, f"{what}: shmat to fill it: {os.strerror(ctypes.get_errno())}")
    try:
        fd = os.open(shmem.map_files_path(os.getpid(), address, address + _pages(obj.size)), os.O_RDWR | os.O_CLOEXEC)
        try:
            shmem.write_extents(fd, obj, data)
        finally:
            os.close(fd)
    finally:
        _libc.shmdt(ctypes.c_void_p(address))


def _set_owner(obj: SharedMemory, pid: int, what: str) -> None:
    ds = _ShmidDs()
    if _libc.shmctl(obj.id, IPC_STAT, ctypes.byref(ds)) != 0:
        raise RestoreError(pid, f"{what}: IPC_STAT: {os.strerror(ctypes.get_errno())}")
    ds.shm_perm.uid, ds.shm_perm.gid, ds.shm_perm.mode = obj.sysv.uid, obj.sysv.gid, obj.mode
    if _libc.shmctl(obj.id, IPC_SET, ctypes.byref(ds)) != 0:
        raise RestoreError(pid, f"{what}: IPC_SET (owner {obj.sysv.uid}:{obj.sysv.gid}, mode {obj.mode:o}): "
                                f"{os.strerror(ctypes.get_errno())}")
