"""The C layout the compiler produced (from DWARF) matches the ctypes module, and the check catches a one-sided change."""

import importlib.util
import pathlib
import subprocess
import ctypes

import pytest
from elftools.elf.elffile import ELFFile

from blobgen import protocol as protocol_renderer
from blobgen_support import REPO

Layouts = dict[str, tuple[int, dict[str, int]]]  # struct name -> (size, {field: offset})
ECHO_FIELD = '  { name = "echoed", type = "u64" },\n'


def c_layouts(header_dir: pathlib.Path, struct_names: list[str], tmp: pathlib.Path) -> Layouts:
    source = tmp / "layout.c"
    source.write_text('#include "protocol.h"\n' + "".join(f"struct {n} layout_{n};\n" for n in struct_names))
    obj = tmp / "layout.o"
    subprocess.run(["gcc", "-g", "-c", "-iquote", str(header_dir), "-iquote", str(REPO / "pie" / "include"),
                    str(source), "-o", str(obj)], check=True)
    layouts: Layouts = {}
    with open(obj, "rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_name" not in die.attributes:
                    continue
                members = {
                    child.attributes["DW_AT_name"].value.decode(): child.attributes["DW_AT_data_member_location"].value
                    for child in die.iter_children()
                    if child.tag == "DW_TAG_member"
                }
                layouts[die.attributes["DW_AT_name"].value.decode()] = (die.attributes["DW_AT_byte_size"].value, members)
    return layouts


def python_layouts(module) -> Layouts:
    layouts: Layouts = {}
    for cls in module.STRUCTS:
        fields = {name: getattr(cls, name).offset for name, *_ in cls._fields_}
        if cls.FLEXIBLE:
            fields[cls.FLEXIBLE[0]] = ctypes.sizeof(cls)
        layouts[cls.C_NAME] = (ctypes.sizeof(cls), fields)
    return layouts


def differences(c: Layouts, py: Layouts) -> list[str]:
    found = []
    for name in sorted(set(c) | set(py)):
        if name not in c or name not in py:
            found.append(f"struct {name} only in {'Python' if name in py else 'C'}")
        elif c[name] != py[name]:
            found.append(f"struct {name}: C {c[name]} != Python {py[name]}")
    return found


def render(tmp: pathlib.Path, toml_text: str) -> tuple[pathlib.Path, object]:
    """Render a declaration into tmp/include/protocol.h and an imported tmp/protocol.py."""
    source = tmp / "protocol.toml"
    source.write_text(toml_text)
    header, module_path = tmp / "include" / "protocol.h", tmp / "protocol.py"
    assert protocol_renderer.main([str(source), "--c-header", str(header), "--python", str(module_path)]) == 0
    spec = importlib.util.spec_from_file_location(f"protocol_{tmp.name}", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return header.parent, module


def test_no_two_structs_are_declared_with_the_same_fields():
    """A layout both blobs use (the kernel's sigaction, itimerval, iovec) is declared once, not once per blob."""
    declaration = protocol_renderer.load(REPO / "pie" / "protocol.toml")
    seen: dict[tuple, str] = {}
    for struct in declaration.structs:
        fields = tuple((f.name, f.type, f.count) for f in struct.fields)
        assert fields not in seen, f"struct {struct.name} repeats struct {seen[fields]}"
        seen[fields] = struct.name


def test_c_and_python_layouts_agree(build_tree, tmp_path):
    from runtime.infect import blobs

    module = blobs.protocol()
    py = python_layouts(module)
    c = c_layouts(build_tree / "pie" / "include", list(py), tmp_path)
    assert len(py) == len(module.STRUCTS) > 10
    assert differences(c, py) == []


@pytest.mark.parametrize("changed_side", ["C", "Python"])
def test_layout_check_fails_when_a_field_is_added_on_one_side(build_tree, tmp_path, changed_side):
    original = (REPO / "pie" / "protocol.toml").read_text()
    assert ECHO_FIELD in original
    modified = original.replace(ECHO_FIELD, ECHO_FIELD + '  { name = "added_on_one_side", type = "u64" },\n', 1)
    (tmp_path / "same").mkdir()
    (tmp_path / "changed").mkdir()
    same_header, same_module = render(tmp_path / "same", original)
    changed_header, changed_module = render(tmp_path / "changed", modified)
    header, module = (changed_header, same_module) if changed_side == "C" else (same_header, changed_module)
    py = python_layouts(module)
    found = differences(c_layouts(header, list(py), tmp_path), py)
    assert len(found) == 1 and found[0].startswith("struct parasite_echo_args:")
    assert "added_on_one_side" in found[0]
