"""The generated loaders run the real blobs: the C header in a C program, the Python module through ctypes."""

import ctypes
import json
import struct
import subprocess

from blobgen_support import REPO, build_fixture_blob, map_rwx, place_at, run_in_child
from runtime.infect import blobs

MASK = 2**64 - 1


def selftest_expected(x: int) -> int:
    """The restorer's SELFTEST function as pie/protocol.toml documents it."""
    x = (x * 0x9E3779B97F4A7C15) & MASK
    x ^= x >> 29
    x = (x + 0x632BE59BD9B4E019) & MASK
    return ((x << 17) | (x >> 47)) & MASK


def test_parasite_echo_runs_through_head_and_dispatcher_at_two_addresses(build_tree, tmp_path):
    program = tmp_path / "parasite_echo"
    subprocess.run(
        ["gcc", "-O1", "-g", "-Wall", "-Werror",
         "-iquote", str(build_tree / "pie"), "-iquote", str(build_tree / "pie" / "include"),
         "-iquote", str(REPO / "pie" / "include"),
         str(REPO / "tests" / "c" / "parasite_echo.c"), "-o", str(program)],
        check=True,
    )
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "round 0: echoed 0x5eed0000c0ffee00" in lines
    assert "round 1: echoed 0x5eed0000c0ffee01" in lines
    placed = [line.rsplit(" ", 1)[1] for line in lines if line.startswith("child: round")]
    assert len(placed) == 2 and placed[0] != placed[1]


def test_restorer_selftest_runs_through_python_loader_at_two_addresses(build_tree):
    restorer = blobs.load("restorer")
    proto = blobs.protocol()
    assert restorer.relocations, "the selftest's pointer table must need load-time relocations"

    def work() -> bytes:
        results = []
        for seed in (0x0123456789ABCDEF, 0xFEDCBA9876543210):
            base = map_rwx(restorer.memory_size)
            place_at(restorer, base)
            args = proto.RestorerArgs(mode=proto.RESTORER_MODE_SELFTEST, log_fd=-1, selftest_in=seed)
            entry = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)(base + restorer.exports["restorer_entry"])
            ret = entry(ctypes.addressof(args))
            results.append((base, ret, args.selftest_out, args.selftest_sp))
        return struct.pack("<" + "QqQQ" * 2, *(v for r in results for v in r))

    values = struct.unpack("<" + "QqQQ" * 2, run_in_child(work))
    runs = [values[i : i + 4] for i in (0, 4)]
    assert runs[0][0] != runs[1][0]
    for (base, ret, out, sp), seed in zip(runs, (0x0123456789ABCDEF, 0xFEDCBA9876543210)):
        assert ret == 0
        assert out == selftest_expected(seed)
        assert base <= sp < base + restorer.memory_size, "the restorer must run on its own stack"


def test_fixture_blob_with_got_and_absolute_pointers_runs_at_two_addresses(tmp_path, monkeypatch):
    assert build_fixture_blob(tmp_path, "good", ["good.c"], ["fixture_entry"]).returncode == 0
    monkeypatch.setenv("REVIVE_BUILD_DIR", str(tmp_path / "out"))
    blob = blobs.load("good")
    manifest = json.loads((tmp_path / "out" / "good.json").read_text())
    assert "got" in {s["kind"] for s in manifest["sections"]}
    assert len(blob.relocations) == 3  # two function pointers and one GOT slot

    def work() -> bytes:
        out = []
        for _ in range(2):
            base = map_rwx(blob.memory_size)
            place_at(blob, base)
            entry = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(base + blob.exports["fixture_entry"])
            out.append(entry(5))
        return struct.pack("<QQ", *out)

    assert struct.unpack("<QQ", run_in_child(work)) == (53, 53)
