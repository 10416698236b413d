"""`scons blobs` in a clean copy of the sources: builds both blobs, rebuilds nothing twice, reproducibly."""

import re

import pytest

from blobgen_support import copy_sources, scons

BLOBS = ("parasite", "restorer")
OUTPUTS = [f"build/pie/{n}{suffix}" for n in BLOBS for suffix in (".bin", ".json", "-blob.h", "_blob.py")] + [
    "build/pie/protocol.py",
    "build/pie/include/protocol.h",
]


def rebuilt(output: str) -> set[str]:
    return set(re.findall(r"^scons: rebuilding `([^']+)'", output, re.M))


def clean_build(tree):
    copy_sources(tree)
    done = scons(tree, "-j2", "blobs")
    assert done.returncode == 0, done.stdout + done.stderr
    return tree


@pytest.fixture(scope="module")
def first_tree(tmp_path_factory):
    return clean_build(tmp_path_factory.mktemp("first"))


def test_clean_build_makes_both_blobs(first_tree):
    for rel in OUTPUTS:
        assert (first_tree / rel).stat().st_size > 0, rel


def test_noop_rebuild_does_nothing(first_tree):
    done = scons(first_tree, "--debug=explain", "blobs")
    assert done.returncode == 0
    assert rebuilt(done.stdout) == set()
    assert "scons: `blobs' is up to date." in done.stdout


def test_generated_protocol_header_is_seen_by_the_c_scanner(first_tree):
    done = scons(first_tree, "--tree=prune", "build/obj/restorer/restorer.o")
    assert "build/pie/include/protocol.h" in done.stdout


def test_editing_one_c_file_rebuilds_only_its_dependents(tmp_path):
    tree = clean_build(tmp_path)
    source = tree / "pie" / "parasite" / "parasite.c"
    source.write_text("/* edited by the incremental-build test */\n" + source.read_text())
    done = scons(tree, "--debug=explain", "blobs")
    assert done.returncode == 0, done.stderr
    changed = rebuilt(done.stdout)
    assert "build/obj/parasite/parasite.o" in changed
    allowed = {"build/obj/parasite/parasite.o", "build/pie/parasite.built-in.o", "build/pie/parasite.lds.o"}
    assert changed - allowed <= {f"build/pie/parasite{s}" for s in (".bin", ".json", "-blob.h", "_blob.py")}


def test_two_clean_builds_are_byte_identical(first_tree, tmp_path):
    second = clean_build(tmp_path)
    for rel in OUTPUTS:
        assert (first_tree / rel).read_bytes() == (second / rel).read_bytes(), rel
