"""`blobgen inspect`: what is inside a blob, from its .bin, its .built-in.o or its generated module.

Every input kind is turned into the same Blob the build produced, so the
report is the same whichever file a person has at hand: a .bin is checked
against the NAME.json manifest beside it, a generated NAME_blob.py against
its own digest, and an object file goes through the build pipeline (laid
out with the linker script first when it is a plain `.built-in.o`).

The disassembly of an export stops where the export ends: bytes after it
are alignment padding or another function, and decoding them as its
instructions misleads. The end is the symbol's size when an object file
says it, else the next export or the end of the export's section,
whichever comes first.
"""

import hashlib
import importlib.util
import json
import pathlib
import sys
import tempfile

import capstone
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from blobgen import elf
from blobgen.blob import EXPORT_PREFIX, Blob, BlobSection, Export, from_manifest
from blobgen.build import build
from blobgen.errors import BlobError
from blobgen.layout import PLACED_PREFIX
from blobgen.link import link_layout

def _blob_name(path: pathlib.Path) -> str:
    return path.name.split(".", 1)[0].removesuffix("_blob")


def _from_bin(path: pathlib.Path) -> Blob:
    manifest_path = path.with_suffix(".json")
    try:
        image = path.read_bytes()
        manifest = json.loads(manifest_path.read_text())
    except OSError as exc:
        raise BlobError(str(exc.filename or path), exc.strerror or str(exc)) from exc
    except json.JSONDecodeError as exc:
        raise BlobError(str(manifest_path), f"manifest is not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(manifest, dict):
        raise BlobError(str(manifest_path), "manifest is not a JSON object")
    return from_manifest(manifest, image, str(path))


def _from_module(path: pathlib.Path) -> Blob:
    spec = importlib.util.spec_from_file_location(f"_inspected_{_blob_name(path)}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        image = bytes(module.IMAGE)
        blob = Blob(
            name=module.NAME,
            source=module.SOURCE,
            image=image,
            bss_size=module.BSS_SIZE,
            exports=tuple(sorted((Export(k, v) for k, v in module.EXPORTS.items()), key=lambda e: (e.offset, e.name))),
            relocations=tuple(module.RELOCATIONS),
            sections=tuple(BlobSection(*s) for s in module.SECTIONS),
            entry=module.ENTRY,
        )
        digest = module.SHA256
    except OSError as exc:
        raise BlobError(str(path), exc.strerror or str(exc)) from exc
    except (SyntaxError, AttributeError, TypeError, ValueError, NameError) as exc:
        raise BlobError(str(path), f"not a blobgen module ({type(exc).__name__}: {exc})") from exc
    if hashlib.sha256(image).hexdigest() != digest:
        raise BlobError(str(path), f"IMAGE digest does not match SHA256 {digest}")
    return blob


def _from_object(path: pathlib.Path) -> Blob:
    obj = elf.load(str(path))
    if any(s.name.startswith(PLACED_PREFIX) for s in obj.sections):
        return build(_blob_name(path), str(path))
    with tempfile.TemporaryDirectory(prefix="blobgen-inspect-") as tmp:
        laid_out = str(pathlib.Path(tmp) / path.name)
        link_layout(str(path), laid_out)
        blob = build(_blob_name(path), laid_out)
    return Blob(**{**blob.__dict__, "source": path.name})


def describe(path: pathlib.Path) -> Blob:
    """The Blob that PATH holds or describes; BlobError for anything unreadable or inconsistent."""
    if not path.is_file():
        raise BlobError(str(path), "no such file")
    if path.suffix == ".bin":
        return _from_bin(path)
    if path.suffix == ".py":
        return _from_module(path)
    return _from_object(path)


def export_sizes(path: pathlib.Path) -> dict[str, int]:
    """The size the ELF symbol table gives each export (without the prefix); none for a .bin or a module."""
    if path.suffix in (".bin", ".py"):
        return {}
    return {s.name[len(EXPORT_PREFIX) :]: s.size for s in elf.load(str(path)).symbols
            if s.name.startswith(EXPORT_PREFIX) and s.defined and s.size}


def export_end(blob: Blob, export: Export, sizes: dict[str, int]) -> int:
    """Where the export's code ends in the image (see the module docstring)."""
    if export.name in sizes:
        return export.offset + sizes[export.name]
    later = [e.offset for e in blob.exports if e.offset > export.offset]
    section_ends = [s.offset + s.size for s in blob.sections if s.offset <= export.offset < s.offset + s.size]
    return min([*later, *section_ends, blob.size])


def disassemble(blob: Blob, sizes: dict[str, int]) -> dict[str, list[dict]]:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    listing = {}
    for e in blob.exports:
        code = blob.image[e.offset : export_end(blob, e, sizes)]
        listing[e.name] = [
            {"offset": i.address, "bytes": i.bytes.hex(), "text": f"{i.mnemonic} {i.op_str}".strip()}
            for i in md.disasm(code, e.offset)
        ]
    return listing


def report(blob: Blob, disasm: bool, sizes: dict[str, int]) -> dict:
    data = blob.to_manifest()
    if disasm:
        data["disasm"] = disassemble(blob, sizes)
    return data


def _table(title: str, columns: tuple[str, ...], rows) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def print_human(data: dict) -> None:
    console = Console()
    console.print(
        _table(
            f"blob {data['name']} (from {data['source']})",
            ("field", "value"),
            [
                ("size", str(data["size"])),
                ("bss size", str(data["bss_size"])),
                ("memory size", str(data["memory_size"])),
                ("sha256", data["sha256"]),
                ("entry", f"{data['entry']:#x}"),
            ],
        )
    )
    console.print(
        _table(
            "sections",
            ("name", "offset", "size", "kind"),
            [(s["name"], f"{s['offset']:#x}", str(s["size"]), s["kind"]) for s in data["sections"]],
        )
    )
    console.print(_table("exports", ("name", "offset"), [(k, f"{v:#x}") for k, v in data["exports"].items()]))
    relocs = data["relocations"]
    console.print(f"relocations ({len(relocs)} load-time u64 words): " + (" ".join(f"{r:#x}" for r in relocs) or "none"))
    for name, lines in data.get("disasm", {}).items():
        console.print(
            _table(f"disassembly of {name}", ("offset", "bytes", "instruction"),
                   [(f"{i['offset']:#x}", i["bytes"], i["text"]) for i in lines])
        )


def inspect(path: pathlib.Path, as_json: bool, disasm: bool) -> int:
    data = report(describe(path), disasm, export_sizes(path) if disasm else {})
    if as_json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print_human(data)
    return 0
