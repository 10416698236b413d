"""inotify(7): an instance and its watches, added again under the same watch descriptors.

Why from file handles: fdinfo lists each watch with its descriptor, mask and
the watched inode as a file handle (`f_handle`), not a path; the dump opens
the handle on a mount of its device (open_by_handle_at, which root may use)
and reads the path from the descriptor it gets. A watch whose file has no
path any more is refused.

Why dummies at restore: the kernel hands out watch descriptors in turn,
from 1, never reusing a freed one until it wraps. To give each watch its
number the restore adds a watch on a scratch directory and removes it
again for every number skipped; the IN_IGNORED events those removals queue
are read away before the process runs. Events queued at the dump are lost
(the kernel offers no way to read them without consuming them, nor to queue
them again).
"""

import ctypes
import errno
import os
import re

from runtime.errors import DumpError, ImageError, RestoreError, shorten
from runtime.files.base import FileKindBase, place, refuse_payload
from runtime.images.model import FdKind, FileEntry, InotifyWatch
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.fds import FileKind, OpenFile

LINK = "anon_inode:inotify"
O_PATH = 0o10000000
WATCH_MAX = 1 << 20  # above the default fs.inotify.max_user_watches: a descriptor no restore reaches
_WATCH = re.compile(r"inotify wd:(\d+) ino:[0-9a-f]+ sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:[0-9a-f]+ "
                    r"fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]+)")


class InotifyInstance(FileKindBase):
    kind = FdKind.INOTIFY

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.ANON_INODE and open_file.link == LINK

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        watches = []
        for line in open_file.fdinfo.splitlines():
            if not line.startswith("inotify "):
                continue
            match = _WATCH.match(line)
            if match is None:
                raise DumpError(pid, f"fd {open_file.fd}: an inotify line fdinfo prints unlike this runtime reads: "
                                     f"{line!r}")
            wd, sdev, mask, nbytes, htype, handle = match.groups()
            device = int(sdev, 16)
            path = _path_of(os.makedev(device >> 20, device & 0xFFFFF), int(htype, 16),
                            bytes.fromhex(handle)[:int(nbytes, 16)])
            if path is None:
                raise DumpError(pid, f"fd {open_file.fd} (inotify): watch {wd} watches a file that has no path any "
                                     "more: not supported")
            watches.append(InotifyWatch(int(wd), int(mask, 16), path))
        return FileEntry(file_id, self.kind, flags=open_file.flags, inotify=tuple(sorted(watches, key=lambda w: w.wd)))

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.inotify is None:
            raise ImageError(file, f"{field}.inotify", "an inotify instance needs its watches")
        previous = 0
        for index, watch in enumerate(entry.inotify):
            if not previous < watch.wd < WATCH_MAX or watch.mask >= 1 << 32 or not watch.path.startswith("/"):
                raise ImageError(file, f"{field}.inotify[{index}]", "watch descriptors ascending from 1, a 32-bit "
                                                                    "mask and an absolute path")
            previous = watch.wd

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        made = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if made < 0:
            raise RestoreError(pid, f"fd {number}: inotify_init1: {os.strerror(ctypes.get_errno())}")
        try:
            _add_watches(made, entry.inotify, number, pid)
            _drain(made)
            os.set_blocking(made, not entry.flags & os.O_NONBLOCK)
        except BaseException:
            os.close(made)
            raise
        return place(made, number, inheritable)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return "inotify watching " + (", ".join(f"{w.wd}: {w.path}" for w in entry.inotify) or "nothing"), ""


KIND = InotifyInstance()


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


def _path_of(device: int, handle_type: int, handle: bytes) -> str | None:
    """The path of the file a handle names on device, through a mount of it; None if it has none."""
    mount = _mount_point(device)
    if mount is None or len(handle) > 128:
        return None
    request = _FileHandle(len(handle), handle_type)
    ctypes.memmove(request.f_handle, handle, len(handle))
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(request), O_PATH | os.O_CLOEXEC)
    finally:
        os.close(mount_fd)
    if fd < 0:
        return None
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return None if path.endswith(" (deleted)") or not path.startswith("/") else path


def _mount_point(device: int) -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            major, minor = fields[2].split(":")
            if os.makedev(int(major), int(minor)) == device:
                return fields[4]
    return None


def _add_watches(fd: int, watches: tuple[InotifyWatch, ...], number: int, pid: int) -> None:
    """Each watch under its descriptor: a scratch directory watched and unwatched for each one skipped."""
    import tempfile  # only a restore of inotify watches makes a scratch directory

    following = 1
    with tempfile.TemporaryDirectory(prefix="revive-inotify-") as scratch:
        for watch in watches:
            while following < watch.wd:
                skipped = _add(fd, scratch, 0x100, number, pid)  # IN_CREATE: any event will do
                _libc.inotify_rm_watch(fd, skipped)
                following = skipped + 1
            got = _add(fd, watch.path, watch.mask, number, pid)
            if got != watch.wd:
                raise RestoreError(pid, f"fd {number}: inotify watch {watch.wd} on {shorten(watch.path)} came back "
                                        f"as {got}")
            following = got + 1


def _add(fd: int, path: str, mask: int, number: int, pid: int) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask))
    if wd < 0:
        raise RestoreError(pid, f"fd {number}: inotify watch on {shorten(path)}: {os.strerror(ctypes.get_errno())}")
    return wd


def _drain(fd: int) -> None:
    """Read away what the scratch watches queued (IN_IGNORED events)."""
    while True:
        try:
            if not os.read(fd, 1 << 16):
                return
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            raise
