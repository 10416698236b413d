"""Reads a relocatable x86_64 ELF object: the only module that imports LIEF.

Why one module: the rest of blobgen works on the frozen dataclasses below, so
the ELF library can change (or be swapped for pyelftools) in one place, and
the stages after `load` are plain functions of plain data.
"""

from dataclasses import dataclass

import lief

from blobgen.errors import BlobError

SHN_UNDEF = 0
SHN_COMMON = 0xFFF2
SHF_TLS = 0x400


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    address: int  # as the linker script assigned it in the `ld -r -T` output
    size: int
    kind: str  # "progbits", "nobits", "rela", ... (lower-case ELF section type)
    alloc: bool
    write: bool
    execute: bool
    tls: bool
    align: int
    content: bytes  # empty for nobits


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int  # relative to its section in a relocatable file
    shndx: int  # SHN_UNDEF, SHN_ABS, SHN_COMMON or a section index
    binding: str  # "local", "global", "weak"
    kind: str  # "func", "object", "tls", "section", "notype", "file"
    size: int

    @property
    def defined(self) -> bool:
        return self.shndx != SHN_UNDEF

    def label(self, sections: dict[int, Section]) -> str:
        """A name for messages: section symbols are named after their section."""
        if self.name or self.shndx not in sections:
            return self.name
        return sections[self.shndx].name


@dataclass(frozen=True)
class Relocation:
    section: int  # index of the section whose bytes are patched
    offset: int  # within that section
    type: int  # raw R_X86_64_* number
    symbol: Symbol
    addend: int


@dataclass(frozen=True)
class ElfObject:
    path: str
    sections: tuple[Section, ...]
    symbols: tuple[Symbol, ...]
    relocations: tuple[Relocation, ...]

    def section_map(self) -> dict[int, Section]:
        return {s.index: s for s in self.sections}

    def target_label(self, symbol: Symbol, addend: int) -> str:
        """Name what a relocation reaches: for a section symbol, the named symbol covering section+addend."""
        if symbol.kind != "section":
            return symbol.name
        for s in self.symbols:
            if s.shndx == symbol.shndx and s.name and s.kind in ("func", "object", "tls", "notype"):
                if s.value <= addend < s.value + max(s.size, 1):
                    return s.name
        return symbol.label(self.section_map())


def _enum_name(value) -> str:
    return value.name.lower()


def _convert_symbol(sym) -> Symbol:
    return Symbol(
        name=sym.name,
        value=sym.value,
        shndx=sym.shndx,
        binding=_enum_name(sym.binding),
        kind=_enum_name(sym.type),
        size=sym.size,
    )


def _check_bounds(path: str, binary, length: int) -> None:
    header = binary.header
    end = header.section_header_offset + header.numberof_sections * header.section_header_size
    if end > length:
        raise BlobError(path, f"truncated: section headers end at {end}, file has {length} bytes")
    for section in binary.sections:
        if section.type != lief.ELF.Section.TYPE.NOBITS and section.offset + section.size > length:
            raise BlobError(path, f"truncated: section {section.name} ends beyond the file")


def load(path: str) -> ElfObject:
    """Parse PATH, which must be a relocatable x86_64 ELF object."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BlobError(path, exc.strerror or str(exc)) from exc
    if data[:4] != b"\x7fELF":
        raise BlobError(path, "not an ELF file")
    lief.logging.disable()
    binary = lief.ELF.parse(list(data))
    if binary is None:
        raise BlobError(path, "not a readable ELF file (truncated or corrupt)")
    if binary.header.file_type != lief.ELF.Header.FILE_TYPE.REL:
        raise BlobError(path, f"not a relocatable object (type {_enum_name(binary.header.file_type)})")
    if binary.header.machine_type != lief.ELF.ARCH.X86_64:
        raise BlobError(path, f"not an x86_64 object ({_enum_name(binary.header.machine_type)})")
    _check_bounds(path, binary, len(data))

    sections = []
    index_of = {}
    for index, s in enumerate(binary.sections):
        index_of[s.name, s.offset, s.size] = index
        if index == 0:
            continue
        nobits = s.type == lief.ELF.Section.TYPE.NOBITS
        sections.append(
            Section(
                index=index,
                name=s.name,
                address=s.virtual_address,
                size=s.size,
                kind=_enum_name(s.type),
                alloc=s.has(lief.ELF.Section.FLAGS.ALLOC),
                write=s.has(lief.ELF.Section.FLAGS.WRITE),
                execute=s.has(lief.ELF.Section.FLAGS.EXECINSTR),
                tls=bool(s.flags & SHF_TLS),
                align=max(s.alignment, 1),
                content=b"" if nobits else bytes(s.content),
            )
        )
    symbols = tuple(_convert_symbol(sym) for sym in binary.symbols if sym.name or sym.shndx)
    elf64 = lief.ELF.Header.CLASS.ELF64
    relocations = tuple(
        Relocation(
            section=index_of[r.section.name, r.section.offset, r.section.size],
            offset=r.address,
            type=r.r_info(elf64) & 0xFFFFFFFF,
            symbol=_convert_symbol(r.symbol),
            addend=r.addend,
        )
        for r in binary.relocations
        if r.has_section
    )
    return ElfObject(path, tuple(sections), symbols, relocations)
