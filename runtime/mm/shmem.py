"""Shared memory no file holds: one object however many mappings and processes map it, its data saved once.

Why an object of its own and not pages of each mapping: MAP_SHARED|MAP_ANONYMOUS
memory lives in an unlinked shmem file the kernel makes at mmap time
(/dev/zero (deleted) in maps, its inode in the inode column); a fork gives
the child the same file, so a write by either is seen by both. Saved as the
pages of each process it would come back as one private copy each. And the
page tables of one process do not show every page of the object: a page
only the other process touched, or one swapped out, is in the file and in
no page table; so the dump reads the file itself (/proc/PID/map_files/,
which root may open), only its parts that hold data (SEEK_DATA/SEEK_HOLE),
straight into shmem-ID.img with sendfile.

A file mapped shared and then deleted (a POSIX semaphore or shm_open
segment, unlinked once every process has it mapped) is the same: memory
only its mappings reach, saved the same way. The restore creates it again
at its name (with its mode, as its first mapper) and unlinks it at once, so
maps shows it deleted as before.

An anonymous object is made again the way the kernel makes one for mmap:
a shared anonymous mapping of the runtime's own, whose file it opens through
its own map_files entry before unmapping it. The saved extents are written
into the object's file, and every restored process maps the file at its
addresses; the kernel then shows the same mapping as before the dump.
"""

import ctypes
import errno
import fcntl
import io
import logging
import mmap
import os
import stat
from dataclasses import dataclass

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError, RestoreError
from runtime.images.model import Extent, SharedMemory, Vma
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.maps import DELETED_SUFFIX, SHARED_ANON_NAME, SYSV_NAME

log = logging.getLogger(__name__)

_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

SEEK_DATA, SEEK_HOLE = os.SEEK_DATA, os.SEEK_HOLE
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
MEMFD_PREFIX = "/memfd:"


def map_files_path(pid: int, start: int, end: int) -> str:
    """The kernel's name for the file behind one mapping of pid."""
    return f"/proc/{pid}/map_files/{start:x}-{end:x}"


@dataclass(frozen=True)
class Reach:
    """Where the dump opens an object: a mapping's /proc/PID/map_files entry, or a memfd's /proc/PID/fd link."""

    pid: int  # whose (for messages)
    through: str  # the /proc path opened
    name: str  # what maps or the fd link shows: "/dev/zero (deleted)", "/memfd:NAME (deleted)", ...


def objects(vmas: dict[int, tuple[Vma, ...]], memfds: dict[int, Reach]) -> dict[int, Reach]:
    """Each shared memory object of the tree (by its id): those the processes map, and memfds only held open."""
    found: dict[int, Reach] = {}
    for view, mapped in vmas.items():
        for vma in mapped:
            if vma.shmem is not None:
                _add(found, vma.shmem, Reach(view, map_files_path(view, vma.start, vma.end), vma.name))
    for shmem_id, reach in memfds.items():
        _add(found, shmem_id, reach)
    return found


def _add(found: dict[int, Reach], shmem_id: int, reach: Reach) -> None:
    seen = found.setdefault(shmem_id, reach)
    if seen.name != reach.name:
        # Inode numbers are unique per file system only: two objects of one number cannot be told apart.
        raise DumpError(reach.pid, f"{reach.name}: its inode {shmem_id} is also that of {seen.name}: not supported")


def check_ghost_size(reach: Reach, limit: int) -> None:
    """A deleted regular file (not shared anonymous memory, a memfd or a SysV segment) must fit the ghost limit."""
    if reach.name == SHARED_ANON_NAME or reach.name.startswith(MEMFD_PREFIX) or SYSV_NAME.match(reach.name):
        return
    size = os.stat(reach.through).st_size
    if size > limit:
        raise DumpError(reach.pid, f"{reach.name}: a deleted file of {size} bytes, more than the ghost limit "
                                   f"({limit}; dump with a larger --ghost-limit to keep it)")


def save(reach: Reach, shmem_id: int, out: io.FileIO) -> SharedMemory:
    """The object, its data extents written to out (from its start): its record."""
    try:
        fd = os.open(reach.through, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DumpError(reach.pid, f"shared memory {reach.name}: cannot open it through {reach.through}: "
                                   f"{exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        size, mode = st.st_size, st.st_mode
        path = None if reach.name == SHARED_ANON_NAME else reach.name.removesuffix(DELETED_SUFFIX)
        memfd = path is not None and path.startswith(MEMFD_PREFIX)
        seals = fcntl.fcntl(fd, F_GET_SEALS) if memfd else 0
        extents = []
        offset = 0
        for start, end in _data_ranges(fd, size):
            _send(out.fileno(), fd, start, end - start)
            extents.append(Extent(start, end - start, offset))
            offset += end - start
    finally:
        os.close(fd)
    return SharedMemory(shmem_id, size, tuple(extents), path, mode, memfd, seals)


def _data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each part of the file that holds data, page-aligned (a hole reads as zeros)."""
    ranges = []
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after position
                break
            raise
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        start -= start % mmap.PAGESIZE
        end = min(end + -end % mmap.PAGESIZE, size)
        ranges.append((start, end))
        position = end
    return ranges


def _send(out: int, src: int, offset: int, length: int) -> None:
    """length bytes of src at offset appended to out, kernel to kernel."""
    while length:
        sent = os.sendfile(out, src, offset, length)
        if sent == 0:
            raise OSError(errno.EIO, f"the shared memory file ended {length} bytes early")
        offset += sent
        length -= sent


def create(obj: SharedMemory, data: io.FileIO) -> int:
    """A new object like obj holding its extents (read from data), a memfd sealed last: an O_RDWR fd of it."""
    if obj.memfd:
        fd = os.memfd_create(obj.path[len(MEMFD_PREFIX):], os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, obj.size)
    else:
        fd = _create_deleted_file(obj) if obj.path is not None else _create_anonymous(obj)
    try:
        write_extents(fd, obj, data)
        if obj.seals:
            fcntl.fcntl(fd, F_ADD_SEALS, obj.seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_extents(fd: int, obj: SharedMemory, data: io.FileIO) -> None:
    """obj's saved extents (read from data) written into the object's file fd, each at its place."""
    for extent in obj.extents:
        os.lseek(fd, extent.start, os.SEEK_SET)
        _send(fd, data.fileno(), extent.offset, extent.length)


def _create_deleted_file(obj: SharedMemory) -> int:
    """The file again, at its name if that is free (maps then shows it as before), unlinked at once."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    name = obj.path
    try:
        fd = os.open(name, flags, stat.S_IMODE(obj.mode))
    except FileExistsError:
        name = f"{obj.path}.revive-{obj.id}"
        log.warning("%s exists again: shared memory object %d is made as %s (deleted)", obj.path, obj.id, name)
        fd = os.open(name, flags, stat.S_IMODE(obj.mode))
    except OSError as exc:
        raise RestoreError(os.getpid(), f"shared memory object {obj.id}: cannot make the deleted file "
                                        f"{obj.path} again: {exc.strerror}") from exc
    try:
        os.unlink(name)
        os.fchmod(fd, stat.S_IMODE(obj.mode))  # the umask may have cut it
        os.ftruncate(fd, obj.size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_anonymous(obj: SharedMemory) -> int:
    """A shared anonymous object of obj's size, as mmap makes one."""
    address = _libc.mmap(None, obj.size, mmap.PROT_READ | mmap.PROT_WRITE, arch.MAP_SHARED | arch.MAP_ANONYMOUS, -1, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise RestoreError(os.getpid(), f"shared memory object {obj.id}: cannot map {obj.size} bytes: "
                                        f"{os.strerror(ctypes.get_errno())}")
    try:
        return os.open(map_files_path(os.getpid(), address, address + obj.size), os.O_RDWR | os.O_CLOEXEC)
    finally:
        _libc.munmap(address, obj.size)
