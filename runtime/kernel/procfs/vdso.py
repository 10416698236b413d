"""The [vdso] of a process: its bytes from /proc/PID/mem and its dynamic symbol table.

Why read it out of the process: the vDSO is built into the running kernel,
and a restore on another kernel must know which functions the old one
exported and where (callers hold pointers into it), so the image keeps the
bytes, a digest and the symbol table (name -> offset, size). Offsets are
relative to the mapping's start: the kernel maps the image's first PT_LOAD
segment there, so an address is start + st_value - that segment's p_vaddr.
"""

import hashlib
import functools
import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from runtime.errors import ProcfsError
from runtime.images.model import VdsoSymbol
from runtime.kernel.procfs.mem import read_memory


@dataclass(frozen=True)
class Vdso:
    start: int
    image: bytes
    sha256: str
    symbols: tuple[VdsoSymbol, ...]  # defined functions and objects, sorted by name


@functools.lru_cache(maxsize=4)
def parse_symbols(image: bytes) -> tuple[VdsoSymbol, ...]:
    """The defined dynamic symbols of a vDSO image, offsets relative to its first byte.

    Cached by the image's bytes: every process of a tree maps the one vDSO of the kernel.
    """
    elf = ELFFile(io.BytesIO(image))
    base = min(seg["p_vaddr"] for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD")
    dynsym = elf.get_section_by_name(".dynsym")
    if not isinstance(dynsym, SymbolTableSection):
        raise ELFError("no .dynsym section")
    symbols = {
        sym.name: VdsoSymbol(sym.name, sym["st_value"] - base, sym["st_size"])
        for sym in dynsym.iter_symbols()
        if sym.name and sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS")
        and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT")
    }
    return tuple(symbols[name] for name in sorted(symbols))


def read_vdso(pid: int, start: int, size: int) -> Vdso:
    image = read_memory(pid, start, size)
    try:
        symbols = parse_symbols(image)
    except ELFError as exc:
        raise ProcfsError(pid, f"[vdso] at {start:#x}: not a valid ELF image: {exc}") from exc
    return Vdso(start, image, hashlib.sha256(image).hexdigest(), symbols)
