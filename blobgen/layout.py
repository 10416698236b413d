"""Layout stage: where each section of the linked object lands in the flat image.

The linker script already assigned addresses from 0 in the `ld -r -T`
output, so a loaded section's image offset is its address. What the linker
cannot do in a relocatable link is build a GOT, so this stage allocates one
8-byte slot per symbol that a GOTPCREL-family relocation reaches, after the
loaded sections and before bss, and moves bss past the slots if needed.
Sections outside the script's `.blob.*` outputs are not placed: validate
names them.
"""

from dataclasses import dataclass

from blobgen import x86_64
from blobgen.elf import ElfObject, Section, Symbol

PLACED_PREFIX = ".blob."
GOT_NAME = ".blobgen.got"
# The assembler references this symbol for GOT-relative code; the GOT is
# blobgen's, so the symbol is too: it names the first slot.
GOT_SYMBOL = "_GLOBAL_OFFSET_TABLE_"


@dataclass(frozen=True)
class Placed:
    name: str
    index: int  # ELF section index, -1 for the GOT blobgen adds
    offset: int
    size: int
    kind: str  # "progbits", "nobits" or "got"


@dataclass(frozen=True)
class GotSlot:
    key: tuple[str, int, int]
    symbol: Symbol
    offset: int


@dataclass(frozen=True)
class Layout:
    obj: ElfObject
    placed: tuple[Placed, ...]
    got: tuple[GotSlot, ...]
    got_offset: int
    image_size: int
    bss_size: int  # zeroed bytes after the image, alignment gap included

    def section_offset(self, index: int) -> int | None:
        return next((p.offset for p in self.placed if p.index == index), None)

    def symbol_offset(self, symbol: Symbol) -> int | None:
        """Image offset of SYMBOL, None when it is undefined or in an unplaced section."""
        if not symbol.defined and symbol.name == GOT_SYMBOL:
            return self.got_offset
        base = self.section_offset(symbol.shndx) if symbol.defined else None
        return None if base is None else base + symbol.value

    def got_slot(self, symbol: Symbol) -> GotSlot | None:
        return next((g for g in self.got if g.key == symbol_key(symbol)), None)


def symbol_key(symbol: Symbol) -> tuple[str, int, int]:
    return (symbol.name, symbol.shndx, symbol.value)


def _align(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def is_placed(section: Section) -> bool:
    return section.alloc and not section.tls and section.name.startswith(PLACED_PREFIX)


def lay_out(obj: ElfObject) -> Layout:
    placed_sections = [s for s in obj.sections if is_placed(s)]
    loaded = sorted((s for s in placed_sections if s.kind != "nobits"), key=lambda s: s.address)
    bss = sorted((s for s in placed_sections if s.kind == "nobits"), key=lambda s: s.address)
    placed = [Placed(s.name, s.index, s.address, s.size, s.kind) for s in loaded]
    end = max((s.address + s.size for s in loaded), default=0)

    placed_indexes = {s.index for s in loaded}
    got_offset = _align(end, x86_64.GOT_SLOT_SIZE)
    slots: dict[tuple[str, int, int], GotSlot] = {}
    for r in obj.relocations:
        key = symbol_key(r.symbol)
        if r.section in placed_indexes and x86_64.uses_got(r.type) and key not in slots:
            slots[key] = GotSlot(key, r.symbol, got_offset + x86_64.GOT_SLOT_SIZE * len(slots))
    if slots:
        end = got_offset + x86_64.GOT_SLOT_SIZE * len(slots)
        placed.append(Placed(GOT_NAME, -1, got_offset, end - got_offset, "got"))

    bss_size = 0
    if bss:
        start = bss[0].address
        shift = max(0, _align(end, max(s.align for s in bss)) - start)
        placed.extend(Placed(s.name, s.index, s.address + shift, s.size, s.kind) for s in bss)
        bss_size = max(s.address + s.size for s in bss) + shift - end
    return Layout(obj, tuple(placed), tuple(slots.values()), got_offset, end, bss_size)
