"""Which mappings of a process are its memory, and which of their pages a dump saves.

Why apart from the dump: the rule for which pages a restore needs (present
or swapped, not the zero page, not unchanged page-cache pages) is what the
image's size, the dump's speed and a later incremental or lazy restore all
depend on; it reads /proc only and decides, and the dump then transfers.
"""

import mmap

from runtime.images.model import KERNEL_MAPPING_KINDS, PAGE_SIZE, PageRun, Vma
from runtime.kernel.procfs import maps, pagemap
from runtime.kernel.procfs.maps import Mapping


def plan_page_runs(pid: int, mappings: tuple[Mapping, ...]) -> tuple[PageRun, ...]:
    """The page runs to save, sorted by vaddr, with their offsets in the pages file.

    Only present or swapped pages are saved. Pages still backed by the page
    cache in a file mapping equal the file (a private mapping's page becomes
    anonymous when first written), so restore maps them from the file. A
    page mapped to the shared zero page reads as zeros and a fresh anonymous
    mapping gives that. Shared anonymous memory and SysV segments are not the
    process's: each object is saved once for the tree (runtime/mm/shmem.py, sysv.py).
    The kernel's own mappings ([vdso], [vvar], [vvar_vclock], [vsyscall]) are
    not the process's data: reading [vvar] pages could even fault.
    """
    runs: list[PageRun] = []
    offset = 0
    for m in mappings:
        if m.name == maps.VSYSCALL or m.shared_anon or m.sysv_key is not None or m.vma().kind in KERNEL_MAPPING_KINDS:
            continue
        for start, end in _saved_ranges(pid, m):
            runs.append(PageRun(start, (end - start) // PAGE_SIZE, offset))
            offset += end - start
    return tuple(runs)


def by_readability(runs: tuple[PageRun, ...], vmas: tuple[Vma, ...]) -> list[tuple[bool, list[PageRun]]]:
    """The runs in order, grouped by whether the process may read them (the parasite can move only those).

    A run is inside one VMA (images/checks.py); PROT_NONE or write-only memory
    holding data (a guard area written before it was protected, a JIT's
    pages between two phases) is read through /proc/PID/mem instead.
    """
    groups: list[tuple[bool, list[PageRun]]] = []
    index = 0
    for run in runs:
        while vmas[index].end <= run.vaddr:
            index += 1
        readable = bool(vmas[index].prot & mmap.PROT_READ)
        if groups and groups[-1][0] == readable:
            groups[-1][1].append(run)
        else:
            groups.append((readable, [run]))
    return groups


def _saved_ranges(pid: int, m: Mapping) -> list[tuple[int, int]]:
    skip = pagemap.PAGE_IS_FILE if m.file_backed else pagemap.PAGE_IS_PFNZERO
    merged: list[tuple[int, int]] = []
    for r in pagemap.scan(pid, m.start, m.end):
        if r.categories & skip:
            continue
        if merged and merged[-1][1] == r.start:
            merged[-1] = (merged[-1][0], r.end)
        else:
            merged.append((r.start, r.end))
    return merged
