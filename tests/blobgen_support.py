"""Helpers for the toolchain tests: temporary copies of the source tree and fixture blobs built from C."""

import ctypes
import mmap
import os
import pathlib
import shutil
import subprocess
import sys

from blobgen import flags
from blobgen.link import link_layout, link_relocatable

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "blobgen_fixtures"


def copy_sources(dest: pathlib.Path) -> pathlib.Path:
    """Copy the tracked and the untracked-but-not-ignored files of the checkout into DEST."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def scons(tree: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the scons of the interpreter running the tests (the venv's), which need not be on PATH."""
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", *args], cwd=tree, capture_output=True, text=True,
                          timeout=300)


def blobgen(*args: str, cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "blobgen", *args], cwd=cwd, env=env, capture_output=True, text=True)


def build_fixture_blob(
    tmp: pathlib.Path, name: str, sources: list[str], require: list[str], cflags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Compile FIXTURES/sources with the blob flags, link and lay them out, and run `blobgen build`."""
    objects = []
    for src in sources:
        obj = tmp / (src.rsplit(".", 1)[0] + ".o")
        lang_flags = flags.ASFLAGS if src.endswith(".S") else [*flags.CFLAGS, *cflags]
        subprocess.run(
            ["gcc", *lang_flags, "-iquote", str(REPO / "pie" / "include"), "-c", str(FIXTURES / src), "-o", str(obj)],
            check=True,
        )
        objects.append(str(obj))
    built_in, laid_out = tmp / f"{name}.built-in.o", tmp / f"{name}.lds.o"
    link_relocatable(objects, str(built_in))
    link_layout(str(built_in), str(laid_out))
    return blobgen("build", name, str(laid_out), "--out-dir", str(tmp / "out"), "--require", *require)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)


def map_rwx(size: int) -> int:
    """A fresh private anonymous RWX mapping, as the runtime gives a blob; never unmapped (child processes only)."""
    addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    return addr


def place_at(blob, addr: int) -> None:
    blob.place((ctypes.c_char * blob.memory_size).from_address(addr), addr)


def run_in_child(work) -> bytes:
    """Run WORK() -> bytes in a forked child (placed blobs may crash it) and return what it produced."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, work())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as f:
            data = f.read()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child ended with status {status:#x}"
    return data
