"""Which pages of a range are present or swapped: the PAGEMAP_SCAN ioctl on /proc/PID/pagemap.

Why PAGEMAP_SCAN (Linux 6.7) rather than reading 8-byte pagemap entries:
one ioctl walks the page tables and returns whole runs with their
categories, so a 1 GiB mapping is a handful of regions instead of 262144
entries parsed in Python. The installed kernel headers (6.1) predate it, so
the request number and structs are declared here (include/uapi/linux/fs.h).
"""

import ctypes
import fcntl
import os
from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import proc_path, translated

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Page categories (include/uapi/linux/fs.h).
PAGE_IS_WPALLOWED = 1 << 0
PAGE_IS_WRITTEN = 1 << 1
PAGE_IS_FILE = 1 << 2  # backed by a page-cache (file or shmem) page, not an anonymous one
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5  # mapped to the shared zero page: reads as zeros, never written
PAGE_IS_HUGE = 1 << 6
PAGE_IS_SOFT_DIRTY = 1 << 7
PAGE_IS_GUARD = 1 << 8  # an MADV_GUARD_INSTALL marker (6.14+)

REPORTED_CATEGORIES = PAGE_IS_FILE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_GUARD


class PageRegion(ctypes.Structure):
    """struct page_region."""

    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class PmScanArg(ctypes.Structure):
    """struct pm_scan_arg."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def _iowr(kind: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


PAGEMAP_SCAN = _iowr("f", 16, ctypes.sizeof(PmScanArg))

_VEC_LEN = 512


@dataclass(frozen=True)
class PageRange:
    """[start, end) whose pages all share the PAGE_IS_* categories in `categories`."""

    start: int
    end: int
    categories: int

    @property
    def nr_pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE


def scan(pid: int, start: int, end: int, anyof: int = PAGE_IS_PRESENT | PAGE_IS_SWAPPED) -> tuple[PageRange, ...]:
    """Ranges of [start, end) having any category of `anyof`, in address order.

    Adjacent pages with equal categories come back as one range (the kernel
    merges them); the categories reported are REPORTED_CATEGORIES.
    """
    ranges: list[PageRange] = []
    with translated(pid, "pagemap"):
        fd = os.open(proc_path(pid, "pagemap"), os.O_RDONLY)
    try:
        vec = (PageRegion * _VEC_LEN)()
        arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=start, end=end,
                        vec=ctypes.addressof(vec), vec_len=_VEC_LEN,
                        category_anyof_mask=anyof, return_mask=REPORTED_CATEGORIES)
        while arg.start < end:
            try:
                count = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
            except OSError as exc:
                raise ProcfsError(pid, f"PAGEMAP_SCAN on /proc/{pid}/pagemap [{start:#x}, {end:#x}) failed: "
                                     f"{os.strerror(exc.errno)}") from exc
            ranges.extend(PageRange(r.start, r.end, r.categories) for r in vec[:count])
            # walk_end is where the kernel stopped: the end, or where the vector filled up.
            arg.start = arg.walk_end
    finally:
        os.close(fd)
    return tuple(ranges)
