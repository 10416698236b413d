"""Finds the generated build outputs (NAME_blob.py, protocol.py) and places blobs in memory.

Why the only importer: the generated modules live in build/, outside the
package, and may be missing or stale; one module turns that into a clear
error ("run `scons blobs`") and gives the rest of the runtime a typed Blob
with the one Python implementation of the loader (Blob.place).
"""

import functools
import hashlib
import importlib.util
import os
import pathlib
import struct
from dataclasses import dataclass
from types import ModuleType

from runtime.errors import ReviveError

PAGE_SIZE = 4096
REPO = pathlib.Path(__file__).resolve().parents[2]


class BlobsError(ReviveError):
    """A generated blob or protocol module is missing or inconsistent; names the file."""


def build_dir() -> pathlib.Path:
    """build/pie of this checkout, or $REVIVE_BUILD_DIR when set."""
    return pathlib.Path(os.environ.get("REVIVE_BUILD_DIR") or REPO / "build" / "pie")


def _import(path: pathlib.Path, module_name: str) -> ModuleType:
    if not path.is_file():
        raise BlobsError(f"{path}: not built; run `scons blobs`")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Blob:
    name: str
    image: bytes
    bss_size: int
    exports: dict[str, int]  # export name without __export_ -> image offset
    relocations: tuple[int, ...]  # offsets of u64 words to which the load address is added
    sha256: str

    @property
    def memory_size(self) -> int:
        return (len(self.image) + self.bss_size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE

    def place(self, buffer, base: int) -> None:
        """Write the image into BUFFER (writable, at least memory_size bytes), zero the bss, relocate for BASE.

        BUFFER and BASE are separate because the runtime writes through its own
        mapping of memory that the target sees at another address.
        """
        view = memoryview(buffer).cast("B")
        if len(view) < self.memory_size:
            raise BlobsError(f"{self.name}: buffer of {len(view)} bytes, blob needs {self.memory_size}")
        size = len(self.image)
        view[:size] = self.image
        view[size : size + self.bss_size] = bytes(self.bss_size)
        for offset in self.relocations:
            (word,) = struct.unpack_from("<Q", view, offset)
            struct.pack_into("<Q", view, offset, (word + base) & (2**64 - 1))


@functools.cache
def _load(directory: pathlib.Path, name: str) -> Blob:
    path = directory / f"{name}_blob.py"
    module = _import(path, f"revive_build_{name}_blob")
    blob = Blob(
        name=module.NAME,
        image=module.IMAGE,
        bss_size=module.BSS_SIZE,
        exports=dict(module.EXPORTS),
        relocations=tuple(module.RELOCATIONS),
        sha256=module.SHA256,
    )
    if hashlib.sha256(blob.image).hexdigest() != blob.sha256:
        raise BlobsError(f"{path}: IMAGE does not match its SHA256; run `scons blobs`")
    return blob


def load(name: str) -> Blob:
    """The blob NAME ("parasite", "restorer") from the current build directory."""
    return _load(build_dir(), name)


@functools.cache
def _protocol(directory: pathlib.Path) -> ModuleType:
    return _import(directory / "protocol.py", "revive_build_protocol")


def protocol() -> ModuleType:
    """The generated ctypes module of pie/protocol.toml."""
    return _protocol(build_dir())
