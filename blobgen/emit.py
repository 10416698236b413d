"""Emit stage: write NAME.bin, NAME.json, NAME-blob.h and NAME_blob.py for a finished blob.

All four are rendered in memory first and then each is written to a
temporary file and renamed, so a failure never leaves half-written outputs
and a reader never sees a partial file. Nothing time- or path-dependent is
written, so two clean builds are byte-identical.
"""

import json
import os
import pathlib
import tempfile

import jinja2

from blobgen.blob import Blob

TEMPLATES = pathlib.Path(__file__).resolve().parent.parent / "templates"
BYTES_PER_ROW = 12
HEX_BYTES_PER_ROW = 32


def output_names(name: str) -> tuple[str, ...]:
    return (f"{name}.bin", f"{name}.json", f"{name}-blob.h", f"{name}_blob.py")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(blob: Blob) -> dict[str, bytes]:
    image = blob.image
    rows = [
        " ".join(f"0x{x:02x}," for x in image[i : i + BYTES_PER_ROW]) for i in range(0, len(image), BYTES_PER_ROW)
    ]
    hex_rows = [image[i : i + HEX_BYTES_PER_ROW].hex() for i in range(0, len(image), HEX_BYTES_PER_ROW)]
    env = _environment()
    bin_name, json_name, header_name, module_name = output_names(blob.name)
    return {
        bin_name: image,
        json_name: (json.dumps(blob.to_manifest(), indent=2, sort_keys=True) + "\n").encode(),
        header_name: env.get_template("blob.h.j2").render(b=blob, rows=rows).encode(),
        module_name: env.get_template("blob.py.j2").render(b=blob, hex_rows=hex_rows).encode(),
    }


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def emit(blob: Blob, out_dir: pathlib.Path) -> tuple[pathlib.Path, ...]:
    outputs = render(blob)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        write_atomically(out_dir / name, data)
    return tuple(out_dir / name for name in outputs)
