"""The limits of this machine an image must fit: the lowest mappable address, the highest descriptor.

Why: the loader refuses what this kernel would refuse half-way through a
restore, or what it allows only to root: a mapping below vm.mmap_min_addr
(a restore as root could map page 0 for a process that could never have
done so itself, the classic NULL-dereference exploit surface) and a
descriptor number above fs.nr_open (no process may have one).
"""

import functools

MMAP_MIN_ADDR_PATH = "/proc/sys/vm/mmap_min_addr"
NR_OPEN_PATH = "/proc/sys/fs/nr_open"


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


@functools.cache
def mmap_min_addr() -> int:
    """vm.mmap_min_addr: mappings below it are refused to a process without CAP_SYS_RAWIO."""
    return _read_int(MMAP_MIN_ADDR_PATH)


@functools.cache
def nr_open() -> int:
    """fs.nr_open: every descriptor number is below it."""
    return _read_int(NR_OPEN_PATH)
