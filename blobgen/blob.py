"""The finished blob: what every output (and `blobgen inspect`) describes.

One frozen dataclass with a manifest form, so the .bin + NAME.json pair can be
read back into exactly the object the build produced and compared byte for
byte with its digest.
"""

import hashlib
from dataclasses import dataclass

from blobgen.errors import BlobError

PAGE_SIZE = 4096
EXPORT_PREFIX = "__export_"


@dataclass(frozen=True)
class BlobSection:
    name: str
    offset: int
    size: int
    kind: str  # "progbits", "nobits" or "got"


@dataclass(frozen=True)
class Export:
    name: str  # without the __export_ prefix
    offset: int


@dataclass(frozen=True)
class Blob:
    name: str
    source: str  # file name the blob was built from (no directory: outputs are reproducible)
    image: bytes
    bss_size: int
    exports: tuple[Export, ...]
    relocations: tuple[int, ...]
    sections: tuple[BlobSection, ...]
    entry: int

    @property
    def size(self) -> int:
        return len(self.image)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image).hexdigest()

    @property
    def memory_size(self) -> int:
        return (self.size + self.bss_size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE

    def to_manifest(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "size": self.size,
            "bss_size": self.bss_size,
            "memory_size": self.memory_size,
            "sha256": self.sha256,
            "entry": self.entry,
            "exports": {e.name: e.offset for e in self.exports},
            "relocations": list(self.relocations),
            "sections": [
                {"name": s.name, "offset": s.offset, "size": s.size, "kind": s.kind} for s in self.sections
            ],
        }


def from_manifest(manifest: dict, image: bytes, file: str) -> Blob:
    """Rebuild a Blob from NAME.json and the bytes of NAME.bin, checking they belong together."""
    try:
        blob = Blob(
            name=str(manifest["name"]),
            source=str(manifest["source"]),
            image=image,
            bss_size=int(manifest["bss_size"]),
            exports=tuple(Export(k, int(v)) for k, v in manifest["exports"].items()),
            relocations=tuple(int(r) for r in manifest["relocations"]),
            sections=tuple(
                BlobSection(s["name"], int(s["offset"]), int(s["size"]), s["kind"]) for s in manifest["sections"]
            ),
            entry=int(manifest["entry"]),
        )
        size, digest = int(manifest["size"]), manifest["sha256"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BlobError(file, f"manifest is malformed ({exc!r})") from exc
    if size != blob.size:
        raise BlobError(file, f"size {blob.size} does not match the manifest's {size}")
    if digest != blob.sha256:
        raise BlobError(file, f"sha256 {blob.sha256} does not match the manifest's {digest}")
    return blob
