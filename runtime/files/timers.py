"""timerfd(2) and signalfd(2): a timer, and a reader of signals, behind a descriptor.

Why together: both are small kernel objects fdinfo describes, made again with
one call and a setting each.

A timerfd's expirations since it was last read are counted only when it is
read (the kernel forwards a periodic timer lazily), so fdinfo's `ticks` is
not the whole count. The dump reads the timer once, through a descriptor
pidfd_getfd gives it (the same open file), which counts and re-arms it as
the process's own read would, and puts the count back at once with
TFD_IOC_SET_TICKS: the process loses no expiration, and fdinfo then shows
when it fires next. The restore sets the timer again (an absolute one as
absolute: the clock's time it fires at) and its unread count.
"""

import ctypes
import os
import struct
import time

from runtime.errors import DumpError, ImageError, RestoreError
from runtime.files.base import FileKindBase, place, refuse_payload
from runtime.images.model import FdKind, FileEntry, Timerfd
from runtime.kernel import pidfd
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs.fds import FileKind, OpenFile, fdinfo_fields
from runtime.kernel.procfs.files import read_text

TIMERFD_LINK = "anon_inode:[timerfd]"
SIGNALFD_LINK = "anon_inode:[signalfd]"
TFD_TIMER_ABSTIME = 1
TFD_SETTIME_FLAGS = 3  # TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
TFD_IOC_SET_TICKS = 0x40085400  # _IOW('T', 0, u64)
NR_SIGNALFD4 = 289
NS = 1_000_000_000
FLAGS_KEPT = os.O_NONBLOCK  # TFD_NONBLOCK and SFD_NONBLOCK are O_NONBLOCK; CLOEXEC is the slot's


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


def _timespec(ns: int) -> _Timespec:
    return _Timespec(ns // NS, ns % NS)


def _pair(text: str) -> int:
    """fdinfo's "(SEC, NSEC)" in nanoseconds."""
    sec, nsec = text.strip("()").split(",")
    return int(sec) * NS + int(nsec)


class TimerDescriptor(FileKindBase):
    kind = FdKind.TIMERFD

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.ANON_INODE and open_file.link == TIMERFD_LINK

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        ticks = _count_ticks(pid, open_file.fd, int(fdinfo_fields(open_file.fdinfo)["ticks"]))
        # Read again: a timer that had fired shows no time left until the count above re-armed it.
        fields = fdinfo_fields(read_text(pid, f"fdinfo/{open_file.fd}"))
        clockid, flags = int(fields["clockid"]), int(fields["settime flags"], 8)
        value, interval = _pair(fields["it_value"]), _pair(fields["it_interval"])
        if value and flags & TFD_TIMER_ABSTIME:
            value += time.clock_gettime_ns(clockid)  # the clock's time it fires at, as it was set
        state = Timerfd(clockid, flags, interval, value, ticks)
        return FileEntry(file_id, self.kind, flags=open_file.flags, timerfd=state)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.timerfd is None:
            raise ImageError(file, f"{field}.timerfd", "a timerfd needs its state")
        if entry.timerfd.settime_flags & ~TFD_SETTIME_FLAGS or entry.timerfd.clockid > 15:
            raise ImageError(file, f"{field}.timerfd", "not a timerfd clock and settime flags")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        t = entry.timerfd
        made = _libc.timerfd_create(t.clockid, (entry.flags & FLAGS_KEPT) | os.O_CLOEXEC)
        try:
            if made < 0:
                raise OSError(ctypes.get_errno(), "timerfd_create")
            setting = _Itimerspec(_timespec(t.interval_ns), _timespec(t.value_ns))
            if _libc.timerfd_settime(made, t.settime_flags, ctypes.byref(setting), None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime")
            if t.ticks and _libc.ioctl(made, TFD_IOC_SET_TICKS, ctypes.byref(ctypes.c_uint64(t.ticks))) != 0:
                raise OSError(ctypes.get_errno(), "TFD_IOC_SET_TICKS")
        except OSError as exc:
            if made >= 0:
                os.close(made)
            raise RestoreError(pid, f"fd {number}: {exc.strerror}: {os.strerror(exc.errno)}") from exc
        return place(made, number, inheritable)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        t = entry.timerfd
        return (f"timerfd clock {t.clockid} next {t.value_ns / NS:.3f}s"
                f"{' (absolute)' if t.settime_flags & TFD_TIMER_ABSTIME else ''} every {t.interval_ns / NS:.3f}s, "
                f"{t.ticks} unread", "")


def _count_ticks(pid: int, fd: int, fired: int) -> int:
    """The expirations not yet read, counted by a read that re-arms the timer, put back at once.

    fired: fdinfo's ticks, 0 when it has not fired since it was last read (a read would block then).
    """
    if not fired:
        return 0
    mine = pidfd.get_fd(pid, fd)
    try:
        ticks = struct.unpack("<Q", os.read(mine, 8))[0]
        if _libc.ioctl(mine, TFD_IOC_SET_TICKS, ctypes.byref(ctypes.c_uint64(ticks))) != 0:
            raise DumpError(pid, f"fd {fd} (timerfd): TFD_IOC_SET_TICKS: {os.strerror(ctypes.get_errno())}")
        return ticks
    finally:
        os.close(mine)


TIMER_KIND = TimerDescriptor()


class SignalDescriptor(FileKindBase):
    kind = FdKind.SIGNALFD

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        return open_file.kind is FileKind.ANON_INODE and open_file.link == SIGNALFD_LINK

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        mask = int(fdinfo_fields(open_file.fdinfo)["sigmask"], 16)
        return FileEntry(file_id, self.kind, flags=open_file.flags, signalfd=mask)

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        refuse_payload(entry, file, field, expected=False)
        if entry.signalfd is None or entry.signalfd >= 1 << 64:
            raise ImageError(file, f"{field}.signalfd", "a signalfd needs its 64-bit mask")

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        mask = ctypes.c_uint64(entry.signalfd)
        made = _libc.syscall(NR_SIGNALFD4, -1, ctypes.byref(mask), 8, (entry.flags & FLAGS_KEPT) | os.O_CLOEXEC)
        if made < 0:
            raise RestoreError(pid, f"fd {number}: signalfd: {os.strerror(ctypes.get_errno())}")
        return place(made, number, inheritable)

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        return f"signalfd mask {entry.signalfd:#x}", ""


SIGNAL_KIND = SignalDescriptor()
