"""The running kernel's vDSO at restore: where it is, and whether it can stand in for the dumped one.

Why: code and stack of the restored process hold addresses inside its old
[vdso]. When the running kernel's vDSO is byte-identical to the dumped one,
moving it (with its [vvar]/[vvar_vclock] data pages, which its code reaches
at fixed offsets) to the old addresses is exact; the restorer does that.
Anything else needs the proxy (a later issue), so here it is refused before
any process is forked.
"""

import ctypes
import hashlib
import os
from dataclasses import dataclass

from runtime.errors import RestoreError
from runtime.images.model import Process
from runtime.procfs.maps import read_mappings


@dataclass(frozen=True)
class Range:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class RunningVdso:
    """This process's own [vvar], [vvar_vclock] and [vdso]; a forked child has them at the same place."""

    vdso: Range
    vvar: Range | None
    vvar_vclock: Range | None

    @property
    def ranges(self) -> tuple[Range, ...]:
        return tuple(r for r in (self.vvar, self.vvar_vclock, self.vdso) if r is not None)

    def sha256(self) -> str:
        return hashlib.sha256(ctypes.string_at(self.vdso.start, self.vdso.size)).hexdigest()


def running_vdso() -> RunningVdso:
    found: dict[str, Range] = {}
    for m in read_mappings(os.getpid()):
        if m.name in ("[vdso]", "[vvar]", "[vvar_vclock]"):
            found[m.name] = Range(m.start, m.end)
    if "[vdso]" not in found:
        raise RestoreError(os.getpid(), "has no [vdso] mapping to give the restored process")
    return RunningVdso(found["[vdso]"], found.get("[vvar]"), found.get("[vvar_vclock]"))


def check_vdso_matches(process: Process, running: RunningVdso) -> None:
    """The running vDSO and its data pages are the dumped ones (size, digest, layout), or a RestoreError."""
    dumped = process.vdso
    if dumped is None:
        return
    what = f"the running kernel's vDSO differs from the one pid {process.pid} was dumped with"
    if running.vdso.size != dumped.vdso_size:
        raise RestoreError(process.pid, f"{what}: {running.vdso.size} bytes, dumped {dumped.vdso_size} "
                                        "(restoring it needs the vDSO proxy, not supported yet)")
    if running.sha256() != dumped.sha256:
        raise RestoreError(process.pid, f"{what}: sha256 {running.sha256()[:16]}..., dumped {dumped.sha256[:16]}... "
                                        "(restoring it needs the vDSO proxy, not supported yet)")
    for name, have, start, size in (("[vvar]", running.vvar, dumped.vvar_start, dumped.vvar_size),
                                    ("[vvar_vclock]", running.vvar_vclock, dumped.vvar_vclock_start,
                                     dumped.vvar_vclock_size)):
        if (have is None) != (start is None) or (have is not None and have.size != size):
            dumped_text = "absent" if start is None else f"{size} bytes"
            have_text = "absent" if have is None else f"{have.size} bytes"
            raise RestoreError(process.pid, f"the running kernel's {name} ({have_text}) does not match the dumped "
                                            f"one ({dumped_text})")
