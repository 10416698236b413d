"""The [vdso] of a process: its bytes from /proc/PID/mem and its dynamic symbol table.

Why read it out of the process: the vDSO is built into the running kernel,
and a restore on another kernel must know which functions the old one
exported and where (callers hold pointers into it), so the image keeps the
bytes, a digest and the symbol table (name -> offset, size). Offsets are
relative to the mapping's start: the kernel maps the image's first PT_LOAD
segment there, so an address is start + st_value - that segment's p_vaddr.

Why read with struct rather than pyelftools: every dump and every restore
reads a vDSO, and importing pyelftools costs more than a whole dump of a
small process (issue 18); the dynamic symbol table is four structures
(include/uapi/linux/elf.h), and tests/test_vdso_plan.py checks the result
against pyelftools'.
"""

import hashlib
import functools
import struct
from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.images.model import VdsoSymbol
from runtime.kernel.procfs.mem import read_memory


@dataclass(frozen=True)
class Vdso:
    start: int
    image: bytes
    sha256: str
    symbols: tuple[VdsoSymbol, ...]  # defined functions and objects, sorted by name


# Elf64_Ehdr: e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
# e_phnum, e_shentsize, e_shnum, e_shstrndx.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
_PHDR = struct.Struct("<IIQQQQQQ")
# Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize.
_SHDR = struct.Struct("<IIQQQQIIQQ")
# Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size.
_SYM = struct.Struct("<IBBHQQ")
_IDENT_64_LSB = b"\x7fELF\x02\x01"  # ELFCLASS64, ELFDATA2LSB
PT_LOAD = 1
SHT_DYNSYM = 11
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
STT_OBJECT, STT_FUNC = 1, 2


class ElfError(ValueError):
    """The image is not the ELF64 little-endian shared object a vDSO is, or its tables run out of it."""


def _unpack(layout: struct.Struct, image: bytes, offset: int, what: str) -> tuple:
    if offset + layout.size > len(image):
        raise ElfError(f"{what} at {offset:#x} runs past the end ({len(image):#x} bytes)")
    return layout.unpack_from(image, offset)


def _string(image: bytes, table: tuple, index: int) -> str:
    """Entry index of the string table section table (an Elf64_Shdr tuple)."""
    start, size = table[4] + index, table[5] - index
    end = image.find(b"\0", start, start + size) if 0 <= index < table[5] else -1
    if end < 0 or table[4] + table[5] > len(image):
        raise ElfError(f"string {index:#x} lies outside its table")
    return image[start:end].decode("utf-8", "replace")


@functools.lru_cache(maxsize=4)
def parse_symbols(image: bytes) -> tuple[VdsoSymbol, ...]:
    """The defined dynamic symbols (functions, objects) of a vDSO image, offsets relative to its first byte.

    Cached by the image's bytes: every process of a tree maps the one vDSO of the kernel.
    """
    if not image.startswith(_IDENT_64_LSB):
        raise ElfError("no ELF64 little-endian header")
    ehdr = _unpack(_EHDR, image, 0, "the ELF header")
    phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx = ehdr[5], ehdr[6], *ehdr[9:]
    if phentsize != _PHDR.size or shentsize != _SHDR.size or shstrndx >= shnum:
        raise ElfError(f"unexpected header table entries (phentsize {phentsize}, shentsize {shentsize}, "
                       f"shstrndx {shstrndx} of {shnum})")
    loads = [ph[3] for ph in (_unpack(_PHDR, image, phoff + i * phentsize, "a program header") for i in range(phnum))
             if ph[0] == PT_LOAD]
    if not loads:
        raise ElfError("no PT_LOAD segment")
    sections = [_unpack(_SHDR, image, shoff + i * shentsize, "a section header") for i in range(shnum)]
    dynsym = next((sh for sh in sections if _string(image, sections[shstrndx], sh[0]) == ".dynsym"), None)
    if dynsym is None or dynsym[1] != SHT_DYNSYM or dynsym[9] != _SYM.size or dynsym[6] >= shnum:
        raise ElfError("no .dynsym section")
    names = sections[dynsym[6]]
    base = min(loads)
    symbols = {}
    for i in range(dynsym[5] // _SYM.size):
        st_name, st_info, _, st_shndx, st_value, st_size = _unpack(_SYM, image, dynsym[4] + i * _SYM.size, "a symbol")
        name = _string(image, names, st_name)
        if name and st_shndx not in (SHN_UNDEF, SHN_ABS) and st_info & 0xF in (STT_FUNC, STT_OBJECT):
            symbols[name] = VdsoSymbol(name, st_value - base, st_size)
    return tuple(symbols[name] for name in sorted(symbols))


def read_vdso(pid: int, start: int, size: int) -> Vdso:
    image = read_memory(pid, start, size)
    try:
        symbols = parse_symbols(image)
    except ElfError as exc:
        raise ProcfsError(pid, f"[vdso] at {start:#x}: not a valid ELF image: {exc}") from exc
    return Vdso(start, image, hashlib.sha256(image).hexdigest(), symbols)
