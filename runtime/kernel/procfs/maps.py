"""The address space of a process: /proc/PID/smaps (or maps, read_layout) read into Mappings and Vmas.

Why smaps rather than maps: the maps line does not say whether a mapping
grows down (MAP_GROWSDOWN) or other properties the kernel only prints as
the two-letter `VmFlags` of smaps (`gd` growsdown, `sh` shared, `dc`
MADV_DONTFORK, ...). A Mapping keeps what the kernel printed; `vma()` turns
it into the model's Vma, the part a restore needs.
"""

import mmap
import re
from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.images.model import KERNEL_MAPPING_KINDS, Vma, VmaAdvice, VmaKind
from runtime.kernel.procfs.files import read_text

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$")

DELETED_SUFFIX = " (deleted)"

# Names the kernel gives its special mappings in the pathname column.
SPECIAL_KINDS = {
    "[heap]": VmaKind.HEAP,
    "[stack]": VmaKind.STACK,
    "[vdso]": VmaKind.VDSO,
    "[vvar]": VmaKind.VVAR,
    "[vvar_vclock]": VmaKind.VVAR_VCLOCK,
}
VSYSCALL = "[vsyscall]"
# The VmFlags codes (fs/proc/task_mmu.c, show_smap_vma_flags) of the flags madvise sets.
ADVICE_FLAGS = {
    "dc": VmaAdvice.DONTFORK,
    "wf": VmaAdvice.WIPEONFORK,
    "dd": VmaAdvice.DONTDUMP,
    "hg": VmaAdvice.HUGEPAGE,
    "nh": VmaAdvice.NOHUGEPAGE,
    "mg": VmaAdvice.MERGEABLE,
    "sr": VmaAdvice.SEQUENTIAL,
    "rr": VmaAdvice.RANDOM,
}

# A MAP_SHARED|MAP_ANONYMOUS mapping is backed by an unlinked shmem file the
# kernel names "dev/zero" (shmem_zero_setup), printed as below.
SHARED_ANON_NAME = "/dev/zero (deleted)"
# A SysV shared memory attach: the segment's file is named for its key when shmget made it, and is never linked.
SYSV_NAME = re.compile(r"/SYSV([0-9a-f]{8}) \(deleted\)\Z")


@dataclass(frozen=True)
class Mapping:
    """One mapping as /proc/PID/smaps printed it."""

    start: int
    end: int
    perms: str  # "rwxp" / "r--s" ...
    offset: int
    dev: tuple[int, int]
    inode: int
    name: str  # the pathname column, kernel escaping kept
    vmflags: frozenset[str]

    @property
    def prot(self) -> int:
        return ((mmap.PROT_READ if self.perms[0] == "r" else 0)
                | (mmap.PROT_WRITE if self.perms[1] == "w" else 0)
                | (mmap.PROT_EXEC if self.perms[2] == "x" else 0))

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def file_backed(self) -> bool:
        """Backed by a file other than the shmem object of a shared anonymous mapping."""
        return self.inode != 0 and self.name.startswith("/") and self.name != SHARED_ANON_NAME

    @property
    def deleted(self) -> bool:
        return self.file_backed and self.name.endswith(DELETED_SUFFIX)

    @property
    def shared_anon(self) -> bool:
        return self.name == SHARED_ANON_NAME

    @property
    def sysv_key(self) -> int | None:
        """The key a SysV attach's name shows (the segment's inode is its shmid); None for any other mapping."""
        match = SYSV_NAME.match(self.name) if self.inode and self.shared else None
        return int(match.group(1), 16) if match else None

    def vma(self) -> Vma:
        """The model's Vma for this mapping ([vsyscall] has none: it is not the process's)."""
        if self.name == VSYSCALL:
            raise ValueError("[vsyscall] is the kernel's, not a VMA of the process")
        growsdown = "gd" in self.vmflags
        if self.sysv_key is not None:
            # Its pages are the segment's (runtime/mm/sysv.py); an SHM_RDONLY attach lacks VM_MAYWRITE (mw).
            return Vma(self.start, self.end, self.prot, True, VmaKind.SYSV, growsdown, offset=self.offset,
                       name=self.name, advice=self.advice, shmem=self.inode, sysv_readonly="mw" not in self.vmflags)
        if self.file_backed:
            # A deleted file (or memfd) is an object of the tree's, as shared anonymous memory is: mapped from it.
            shmem = self.inode if self.deleted else None
            return Vma(self.start, self.end, self.prot, self.shared, VmaKind.FILE, growsdown,
                       path=self.name, offset=self.offset, name=self.name, advice=self.advice, shmem=shmem)
        kind = SPECIAL_KINDS.get(self.name, VmaKind.ANON)
        if self.shared_anon:
            # Its pages are its object's (runtime/mm/shmem.py): the inode names it, the offset is into it.
            return Vma(self.start, self.end, self.prot, True, kind, growsdown, offset=self.offset, name=self.name,
                       advice=self.advice, shmem=self.inode)
        # The kernel sets its own flags on its mappings again ([vvar] always carries `dd`).
        advice = () if kind in KERNEL_MAPPING_KINDS else self.advice
        return Vma(self.start, self.end, self.prot, self.shared, kind, growsdown, name=self.name, advice=advice)

    @property
    def advice(self) -> tuple[VmaAdvice, ...]:
        """The madvise advice VmFlags shows, in VmaAdvice declaration order."""
        present = {ADVICE_FLAGS[code] for code in self.vmflags if code in ADVICE_FLAGS}
        return tuple(advice for advice in VmaAdvice if advice in present)


def parse_smaps(pid: int, text: str) -> tuple[Mapping, ...]:
    """Mappings in address order from the text of /proc/PID/smaps."""
    mappings = []
    header = None
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        match = _HEADER.match(line)
        if match:
            if header is not None:
                mappings.append(_mapping(header, flags))
            header, flags = match, frozenset()
        elif line.startswith("VmFlags:"):
            flags = frozenset(line.split()[1:])
    if header is not None:
        mappings.append(_mapping(header, flags))
    if not mappings:
        raise ProcfsError(pid, "/proc/PID/smaps lists no mappings (a kernel thread or an exiting process)")
    return tuple(mappings)


def _mapping(match: re.Match, vmflags: frozenset[str]) -> Mapping:
    start, end, perms, offset, major, minor, inode, name = match.groups()
    return Mapping(int(start, 16), int(end, 16), perms, int(offset, 16),
                   (int(major, 16), int(minor, 16)), int(inode), name, vmflags)


def read_mappings(pid: int) -> tuple[Mapping, ...]:
    return parse_smaps(pid, read_text(pid, "smaps"))


def read_layout(pid: int) -> tuple[Mapping, ...]:
    """The mappings from /proc/PID/maps: where each lies, its permissions and name, no VmFlags (empty).

    For callers that only need where things are (the running vDSO, the code
    to inject syscalls from): to print smaps the kernel walks the page tables
    of every mapping for its figures, a few ms for the runtime's own Python.
    """
    return parse_smaps(pid, read_text(pid, "maps"))
