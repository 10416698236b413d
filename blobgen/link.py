"""Runs the linker steps of a blob outside SCons: `ld -r` of objects and the layout with ldscripts/pie.lds.

SConstruct has its own builders for the same commands; both take their
flags from blobgen/flags.py. This module serves `blobgen inspect` on a
`.built-in.o` (which is not laid out yet) and the tests' fixture blobs.
"""

import pathlib
import subprocess

from blobgen import flags
from blobgen.errors import BlobError

LDSCRIPT = pathlib.Path(__file__).resolve().parent.parent / "ldscripts" / "pie.lds"


def _run(argv: list[str], file: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise BlobError(file, f"{argv[0]} failed: {lines[0]}")


def link_relocatable(objects: list[str], out: str) -> None:
    _run(["ld", *flags.LD_RELOCATABLE, *objects, "-o", out], out)


def link_layout(built_in: str, out: str) -> None:
    _run(["ld", *flags.LD_LAYOUT, "-T", str(LDSCRIPT), built_in, "-o", out], built_in)
