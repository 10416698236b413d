"""The x86_64 relocation recipes: how each relocation type is resolved in a flat blob.

Why a table: every intra-blob reference reaches blobgen as a relocation of
the `ld -r` output, so supporting a relocation type is one row here (its
name, whether it needs a GOT slot, and how to patch the image), and a type
without a row is a build error naming the symbol instead of a silent
mis-link. A second architecture would be a second module with its own table.
"""

import struct
from dataclasses import dataclass
from typing import Callable

from blobgen.errors import BlobError

NAMES = {
    0: "NONE", 1: "64", 2: "PC32", 3: "GOT32", 4: "PLT32", 5: "COPY", 6: "GLOB_DAT",
    7: "JUMP_SLOT", 8: "RELATIVE", 9: "GOTPCREL", 10: "32", 11: "32S", 12: "16",
    13: "PC16", 14: "8", 15: "PC8", 16: "DTPMOD64", 17: "DTPOFF64", 18: "TPOFF64",
    19: "TLSGD", 20: "TLSLD", 21: "DTPOFF32", 22: "GOTTPOFF", 23: "TPOFF32",
    24: "PC64", 25: "GOTOFF64", 26: "GOTPC32", 41: "GOTPCRELX", 42: "REX_GOTPCRELX",
}


def type_name(rtype: int) -> str:
    return "R_X86_64_" + NAMES.get(rtype, f"UNKNOWN_{rtype}")


@dataclass(frozen=True)
class Site:
    """One relocation to apply: P, S and A in the psABI's notation, G the GOT slot's offset."""

    image: bytearray
    place: int
    symbol: int
    addend: int
    got: int | None
    label: str  # symbol name, for messages


@dataclass(frozen=True)
class Recipe:
    name: str
    uses_got: bool
    # Patches site.image; returns the offsets of u64 words the loader must add the base to.
    apply: Callable[[Site], tuple[int, ...]]


def _put_s32(site: Site, value: int) -> None:
    if not -(1 << 31) <= value < (1 << 31):
        raise BlobError(site.label, f"32-bit PC-relative value {value:#x} out of range at offset {site.place:#x}")
    struct.pack_into("<i", site.image, site.place, value)


def _pc_relative(site: Site) -> tuple[int, ...]:
    # Both ends move together when the blob is placed, so S + A - P is final now.
    _put_s32(site, site.symbol + site.addend - site.place)
    return ()


def _absolute_64(site: Site) -> tuple[int, ...]:
    # Only the load address is unknown: store the offset, the loader adds the base.
    struct.pack_into("<Q", site.image, site.place, (site.symbol + site.addend) & (2**64 - 1))
    return (site.place,)


def _got_pc_relative(site: Site) -> tuple[int, ...]:
    # The slot itself holds the symbol's offset (a load-time relocation recorded
    # by the relocate stage); the instruction reaches the slot PC-relatively.
    _put_s32(site, site.got + site.addend - site.place)
    return ()


RECIPES: dict[int, Recipe] = {
    1: Recipe(type_name(1), False, _absolute_64),
    2: Recipe(type_name(2), False, _pc_relative),
    4: Recipe(type_name(4), False, _pc_relative),
    9: Recipe(type_name(9), True, _got_pc_relative),
    41: Recipe(type_name(41), True, _got_pc_relative),
    42: Recipe(type_name(42), True, _got_pc_relative),
}

GOT_SLOT_SIZE = 8


def uses_got(rtype: int) -> bool:
    recipe = RECIPES.get(rtype)
    return recipe is not None and recipe.uses_got
