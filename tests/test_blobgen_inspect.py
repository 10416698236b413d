"""`blobgen inspect` on every input kind, as JSON and for people, and its one-line errors on bad input."""

import json
import shutil

import pytest
from elftools.elf.elffile import ELFFile

from blobgen_support import blobgen, build_fixture_blob


def inspect_json(path, *extra):
    done = blobgen("inspect", str(path), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", ["parasite", "restorer"])
def test_inspect_agrees_on_bin_object_and_module(build_tree, name):
    pie = build_tree / "pie"
    reports = [inspect_json(pie / f) for f in (f"{name}.bin", f"{name}.built-in.o", f"{name}_blob.py")]
    manifest = json.loads((pie / f"{name}.json").read_text())
    for report in reports:
        for key in ("name", "size", "sha256", "bss_size", "exports", "relocations", "entry", "sections"):
            assert report[key] == manifest[key], key


def test_inspect_shows_a_table_for_people(build_tree):
    done = blobgen("inspect", str(build_tree / "pie" / "parasite.bin"))
    manifest = json.loads((build_tree / "pie" / "parasite.json").read_text())
    assert done.returncode == 0
    assert "parasite_head_start" in done.stdout and "sha256" in done.stdout and ".blob.text" in done.stdout
    assert manifest["sha256"][:40] in done.stdout


def test_inspect_disassembles_each_export(build_tree):
    report = inspect_json(build_tree / "pie" / "parasite.bin", "--disasm")
    head = report["disasm"]["parasite_head_start"]
    assert head[0]["offset"] == report["exports"]["parasite_head_start"]
    assert head[0]["text"].startswith("lea rsp, [rip")  # the head moves to the blob's own stack first
    assert any(i["text"].startswith("call") for i in head)


def elf_export_sizes(path) -> dict[str, int]:
    """The exports' st_size, read with pyelftools (blobgen reads ELF with LIEF)."""
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name.removeprefix("__export_"): s["st_size"] for s in symtab.iter_symbols()
                if s.name.startswith("__export_")}


def listing_end(lines: list[dict]) -> int:
    return lines[-1]["offset"] + len(bytes.fromhex(lines[-1]["bytes"]))


@pytest.mark.parametrize("name, last", [("parasite", "int3"), ("restorer", "ret")])
@pytest.mark.parametrize("kind", [".bin", ".built-in.o", "_blob.py"])
def test_inspect_disasm_ends_at_the_last_instruction_of_each_export(build_tree, name, last, kind):
    pie = build_tree / "pie"
    sizes = elf_export_sizes(pie / f"{name}.built-in.o")
    report = inspect_json(pie / f"{name}{kind}", "--disasm")
    assert report["disasm"].keys() == sizes.keys()
    for export, lines in report["disasm"].items():
        assert listing_end(lines) == report["exports"][export] + sizes[export], export
        assert lines[-1]["text"] == last  # the head's own last instruction, not the padding after it


def test_inspect_disasm_ends_an_export_without_a_size_at_the_next_one(tmp_path):
    assert build_fixture_blob(tmp_path, "two", ["two_exports.S"], ["first", "second"]).returncode == 0
    from_object = inspect_json(tmp_path / "two.lds.o", "--disasm")["disasm"]
    assert [i["text"] for i in from_object["first"]] == ["mov eax, 1", "ret"]  # its ELF size
    assert [i["text"] for i in from_object["second"]] == ["mov eax, 2", "ret"]  # the end of its section
    from_bin = inspect_json(tmp_path / "out" / "two.bin", "--disasm")
    second = from_bin["exports"]["second"]
    assert listing_end(from_bin["disasm"]["first"]) == second  # no size in a .bin: up to the next export
    assert [i["text"] for i in from_bin["disasm"]["second"]] == ["mov eax, 2", "ret"]


def bad_inputs(tmp_path, build_tree):
    pie = build_tree / "pie"
    text = tmp_path / "text.o"
    text.write_text("not an object\n")
    truncated = tmp_path / "truncated.built-in.o"
    truncated.write_bytes((pie / "parasite.built-in.o").read_bytes()[:300])
    tampered = tmp_path / "parasite.bin"
    image = bytearray((pie / "parasite.bin").read_bytes())
    image[0] ^= 0xFF
    tampered.write_bytes(image)
    shutil.copy(pie / "parasite.json", tmp_path / "parasite.json")
    orphan_bin = tmp_path / "lonely.bin"
    orphan_bin.write_bytes(b"\x90" * 16)
    module = tmp_path / "broken_blob.py"
    module.write_text((pie / "parasite_blob.py").read_text().replace('SHA256 = "', 'SHA256 = "00'))
    return {
        "missing": tmp_path / "missing.bin",
        "non-elf": text,
        "truncated": truncated,
        "digest-mismatch": tampered,
        "no-manifest": orphan_bin,
        "module-digest": module,
    }


@pytest.mark.parametrize("kind", ["missing", "non-elf", "truncated", "digest-mismatch", "no-manifest", "module-digest"])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, build_tree, kind):
    path = bad_inputs(tmp_path, build_tree)[kind]
    done = blobgen("inspect", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert path.stem in done.stderr  # the file at fault (or its manifest) is named
