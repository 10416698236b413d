"""The one free-gap finder: where a block of memory can go in an address space that is partly taken.

Why one: the restorer area must go where neither the runtime nor the target
has anything, and the running vDSO must go where the restored process has
nothing; both ask the same question of a list of taken ranges, with the
same bounds (nothing below the lowest address an unprivileged mmap gets,
nothing at or above TASK_SIZE), and differ only in which hole they prefer.
"""

from collections.abc import Iterable

from runtime.images.model import TASK_SIZE

# mmap refuses lower addresses for an unprivileged mapping (vm.mmap_min_addr's usual value).
MMAP_MIN_ADDR = 0x10000


def free_gaps(taken: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Every hole [start, end) of at least size bytes left by the taken ranges, lowest first."""
    holes = []
    cursor = MMAP_MIN_ADDR
    for start, end in [*sorted(taken), (TASK_SIZE, TASK_SIZE)]:
        if start - cursor >= size:
            holes.append((cursor, start))
        cursor = max(cursor, end)
    return holes
