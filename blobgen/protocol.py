"""The shared-structure declaration: parsed once, rendered into C and Python.

pie/protocol.toml is the one place a command number or an argument struct is
declared; this module turns it into frozen dataclasses with the layout
computed (offsets, sizes, alignment as the x86_64 SysV ABI lays them out),
so both renderings and the C-vs-Python layout test agree by construction.
"""

import argparse
import pathlib
import sys
import tomllib
from dataclasses import dataclass

import jinja2

SCALARS = {
    "u8": (1, "u8", "ctypes.c_uint8"),
    "u16": (2, "u16", "ctypes.c_uint16"),
    "u32": (4, "u32", "ctypes.c_uint32"),
    "u64": (8, "u64", "ctypes.c_uint64"),
    "s32": (4, "s32", "ctypes.c_int32"),
    "s64": (8, "s64", "ctypes.c_int64"),
}

TEMPLATES = pathlib.Path(__file__).resolve().parent.parent / "templates"


class ProtocolError(Exception):
    """A declaration that cannot be laid out; the message names struct and field."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    count: int  # 1 for a scalar or struct; 0 for the trailing counted array
    count_field: str | None
    offset: int
    size: int  # of one element
    align: int

    @property
    def is_struct(self) -> bool:
        return self.type not in SCALARS

    @property
    def c_type(self) -> str:
        return SCALARS[self.type][1] if not self.is_struct else f"struct {self.type}"

    @property
    def py_type(self) -> str:
        return SCALARS[self.type][2] if not self.is_struct else camel(self.type)


@dataclass(frozen=True)
class Struct:
    name: str
    doc: str
    fields: tuple[Field, ...]
    size: int
    align: int

    @property
    def py_name(self) -> str:
        return camel(self.name)

    @property
    def fixed_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.count_field is None)

    @property
    def flexible(self) -> Field | None:
        return next((f for f in self.fields if f.count_field is not None), None)


@dataclass(frozen=True)
class Enum:
    name: str
    doc: str
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Protocol:
    source: str
    constants: tuple[tuple[str, int], ...]
    enums: tuple[Enum, ...]
    structs: tuple[Struct, ...]


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _lay_out(raw: dict, known: dict[str, Struct], constants: dict[str, int]) -> Struct:
    name = raw["name"]
    offset, align, fields = 0, 1, []
    for i, f in enumerate(raw["fields"]):
        where = f"struct {name}, field {f.get('name', i)}"
        ftype = f["type"]
        if ftype in SCALARS:
            size = elem_align = SCALARS[ftype][0]
        elif ftype in known:
            size, elem_align = known[ftype].size, known[ftype].align
        else:
            raise ProtocolError(f"{where}: unknown type {ftype!r} (declare structs before use)")
        count_field = f.get("count_field")
        if count_field is not None:
            if i != len(raw["fields"]) - 1:
                raise ProtocolError(f"{where}: a counted array must be the last field")
            if count_field not in {x.name for x in fields}:
                raise ProtocolError(f"{where}: count_field {count_field!r} is not an earlier field")
        count = f.get("count", 1)
        if isinstance(count, str):
            if count not in constants:
                raise ProtocolError(f"{where}: count {count!r} is not a declared constant")
            count = constants[count]
        count = 0 if count_field else count
        if offset % elem_align:
            raise ProtocolError(f"{where}: at offset {offset} needs {elem_align}-byte alignment; add explicit padding")
        fields.append(Field(f["name"], ftype, count, count_field, offset, size, elem_align))
        offset += size * count
        align = max(align, elem_align)
    if offset % align:
        raise ProtocolError(f"struct {name}: size {offset} is not a multiple of its alignment {align}; add tail padding")
    return Struct(name, raw.get("doc", ""), tuple(fields), offset, align)


def load(path: pathlib.Path) -> Protocol:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    constants = {k: int(v) for k, v in raw.get("constants", {}).items()}
    known: dict[str, Struct] = {}
    for s in raw.get("structs", []):
        if s["name"] in known:
            raise ProtocolError(f"struct {s['name']} is declared twice")
        known[s["name"]] = _lay_out(s, known, constants)
    enums = tuple(
        Enum(name, body.get("doc", ""), tuple((k, int(v)) for k, v in body.items() if k != "doc"))
        for name, body in raw.get("enums", {}).items()
    )
    return Protocol(path.name, tuple(constants.items()), enums, tuple(known.values()))


def render(protocol: Protocol, template: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template).render(p=protocol)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the shared protocol declaration.")
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("--c-header", type=pathlib.Path, required=True)
    parser.add_argument("--python", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    try:
        protocol = load(args.source)
    except (OSError, tomllib.TOMLDecodeError, ProtocolError, KeyError) as exc:
        print(f"blobgen protocol: {args.source}: {exc}", file=sys.stderr)
        return 2
    for path, template in ((args.c_header, "protocol.h.j2"), (args.python, "protocol.py.j2")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(protocol, template))
    return 0


if __name__ == "__main__":
    sys.exit(main())
