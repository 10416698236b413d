"""Relocate stage: copy the loaded sections into one image and apply every relocation.

PC-relative references are final at build time (the whole blob moves as one);
absolute ones and GOT slots become load-time relocations: offsets of 64-bit
words holding an image offset, to which the loader adds the load address. A
relocation that cannot be expressed that way is collected (not raised) so
validate can report it together with every other problem of the blob.
"""

import struct
from dataclasses import dataclass

from blobgen import x86_64
from blobgen.layout import Layout


@dataclass(frozen=True)
class Unsupported:
    symbol: str
    type_name: str
    section: str
    offset: int  # within section


@dataclass(frozen=True)
class Relocated:
    layout: Layout
    image: bytes
    relocations: tuple[int, ...]  # sorted offsets of u64 words the loader adds the base to
    unsupported: tuple[Unsupported, ...]


def relocate(layout: Layout) -> Relocated:
    obj = layout.obj
    sections = obj.section_map()
    image = bytearray(layout.image_size)
    for placed in layout.placed:
        if placed.kind == "progbits":
            image[placed.offset : placed.offset + placed.size] = sections[placed.index].content

    load_time: list[int] = []
    unsupported: list[Unsupported] = []
    for r in obj.relocations:
        base = layout.section_offset(r.section)
        target = layout.symbol_offset(r.symbol)
        if base is None or target is None:
            continue  # relocation in or against something unplaced/undefined: validate names it
        label = obj.target_label(r.symbol, r.addend)
        recipe = x86_64.RECIPES.get(r.type)
        if recipe is None:
            unsupported.append(Unsupported(label, x86_64.type_name(r.type), sections[r.section].name, r.offset))
            continue
        slot = layout.got_slot(r.symbol)
        site = x86_64.Site(image, base + r.offset, target, r.addend, slot.offset if slot else None, label)
        load_time.extend(recipe.apply(site))

    for slot in layout.got:
        target = layout.symbol_offset(slot.symbol)
        if target is not None:
            struct.pack_into("<Q", image, slot.offset, target)
            load_time.append(slot.offset)
    return Relocated(layout, bytes(image), tuple(sorted(set(load_time))), tuple(unsupported))
