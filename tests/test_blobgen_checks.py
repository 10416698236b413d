"""Build-time checks: a blob that could not run in a foreign process fails `blobgen build`, naming the culprit."""

import pytest

from blobgen_support import build_fixture_blob

CASES = [
    ("undefined", ["undefined.c"], ["fixture_entry"], (), "undefined symbol missing_function"),
    ("constructor", ["constructor.c"], ["fixture_entry"], (),
     "constructor/destructor section .init_array (fixture_constructor)"),
    ("absolute32", ["absolute32.c"], ["fixture_entry"], ("-fno-pic",),
     "unsupported relocation R_X86_64_32 against absolute_target"),
    ("tls", ["tls.c"], ["fixture_entry"], (), "TLS symbol tls_counter"),
    ("orphan", ["orphan.c"], ["fixture_entry"], (),
     "section .fixture_orphan is not placed by the linker script (orphan_value)"),
    ("missing", ["good.c"], ["fixture_entry", "nonexistent"], (), "missing export __export_nonexistent"),
    ("duplicate", ["dup_a.S", "dup_b.S"], ["dup"], (), "duplicate export __export_dup"),
]


@pytest.mark.parametrize("name,sources,require,cflags,message", CASES, ids=[c[0] for c in CASES])
def test_bad_blob_fails_the_build_naming_the_symbol(tmp_path, name, sources, require, cflags, message):
    done = build_fixture_blob(tmp_path, name, sources, require, cflags)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr
    assert not (tmp_path / "out").exists(), "a failed build must not leave outputs behind"


def test_good_fixture_blob_builds_all_four_outputs(tmp_path):
    done = build_fixture_blob(tmp_path, "good", ["good.c"], ["fixture_entry"])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good-blob.h", "good.bin", "good.json", "good_blob.py"]
