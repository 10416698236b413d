"""Validate stage: refuse a blob that could not run in a foreign address space.

Why these checks: a blob is copied into a process that has no dynamic
linker, no TLS block of ours and no one to run constructors, so each of
those has to fail the build, naming the symbol or section at fault. Every
problem is collected and reported together, in one line.
"""

from collections import Counter

from blobgen.blob import EXPORT_PREFIX, Blob, BlobSection, Export
from blobgen.elf import SHN_COMMON
from blobgen.layout import GOT_SYMBOL, is_placed
from blobgen.relocate import Relocated
from blobgen.errors import BlobError

CONSTRUCTOR_SECTIONS = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors", ".init", ".fini")


def _is_constructor_section(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in CONSTRUCTOR_SECTIONS)


def _problems(relocated: Relocated) -> list[str]:
    layout = relocated.layout
    obj = layout.obj
    undefined = {s.name for s in obj.symbols if not s.defined and s.name != GOT_SYMBOL}
    problems = [f"undefined symbol {n}" for n in sorted(undefined)]
    problems += [f"common symbol {s.name} (compile with -fno-common)" for s in obj.symbols if s.shndx == SHN_COMMON]
    tls_names = [s.name for s in obj.symbols if s.kind == "tls" and s.name]
    problems += [f"TLS symbol {n}" for n in sorted(set(tls_names))]
    for s in obj.sections:
        if not s.alloc or is_placed(s):
            continue
        users = sorted(
            {obj.target_label(r.symbol, r.addend) for r in obj.relocations if r.section == s.index}
            | {y.name for y in obj.symbols if y.shndx == s.index and y.name}
        )
        named = f" ({', '.join(users)})" if users else ""
        if s.tls:
            problems.append(f"TLS section {s.name}{named}")
        elif _is_constructor_section(s.name):
            problems.append(f"constructor/destructor section {s.name}{named}")
        else:
            problems.append(f"section {s.name} is not placed by the linker script{named}")
    problems += [
        f"unsupported relocation {u.type_name} against {u.symbol} at {u.section}+{u.offset:#x}"
        for u in relocated.unsupported
    ]
    return problems


def _exports(relocated: Relocated) -> list[Export]:
    layout = relocated.layout
    found = []
    for s in layout.obj.symbols:
        offset = layout.symbol_offset(s) if s.name.startswith(EXPORT_PREFIX) else None
        if offset is not None:
            found.append(Export(s.name[len(EXPORT_PREFIX) :], offset))
    return sorted(found, key=lambda e: (e.offset, e.name))


def validate(name: str, relocated: Relocated, required: tuple[str, ...]) -> Blob:
    """Return the finished Blob, or raise one BlobError listing every problem."""
    problems = _problems(relocated)
    exports = _exports(relocated)
    counts = Counter(e.name for e in exports)
    problems += [f"duplicate export {EXPORT_PREFIX}{n}" for n, c in sorted(counts.items()) if c > 1]
    problems += [f"missing export {EXPORT_PREFIX}{n}" for n in required if n not in counts]
    if problems:
        raise BlobError(relocated.layout.obj.path, "; ".join(problems))
    offsets = {e.name: e.offset for e in exports}
    layout = relocated.layout
    return Blob(
        name=name,
        source=layout.obj.path.rsplit("/", 1)[-1],
        image=relocated.image,
        bss_size=layout.bss_size,
        exports=tuple(exports),
        relocations=relocated.relocations,
        sections=tuple(BlobSection(p.name, p.offset, p.size, p.kind) for p in layout.placed),
        entry=offsets[required[0]] if required else 0,
    )
