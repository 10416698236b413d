"""Loading an image directory: everything validated before anything is returned.

Why all at once: restore forks a process with the dumped PID and then hands
the image to a restorer that has already unmapped the old address space;
after that point there is no way to report "this file is corrupt" to anyone.
So load() reads the inventory, checks the format version and this CPU's
xsave features, verifies the sha256 of every file it lists (a truncated
pages file or a flipped byte anywhere is caught here), decodes every
process record against the model's declared types, and runs the semantic
checks (images/checks.py) that the types cannot express. Whatever is wrong,
the caller gets one ImageError naming the file and field, and nothing has
been forked or mapped.

Every file is opened with O_NOFOLLOW and must be a regular file: an image
directory may come from elsewhere, and a symlink inside it must not make a
restore read (or a checksum step hang on) something outside it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import ImageError
from runtime.images import checks, codec, layout
from runtime.images.cpu import current_xsave_features, describe_xsave_features
from runtime.images.model import Inventory, Process
from runtime.images.writer import file_sha256

# A JSON record larger than this is not one this tool wrote (a process with
# a million VMAs stays far below it); refusing it keeps a hostile file from
# costing gigabytes of memory in the JSON parser.
JSON_SIZE_MAX = 64 << 20


@dataclass(frozen=True)
class ProcessImage:
    """One process of a checkpoint and the paths of its data files."""

    process: Process
    pages_path: Path
    xstate_paths: dict[int, Path]  # tid -> xstate-TID.img
    vdso_path: Path | None


@dataclass(frozen=True)
class Checkpoint:
    """A validated image directory."""

    directory: Path
    inventory: Inventory
    processes: tuple[ProcessImage, ...]  # the root process first, then by pid

    @property
    def root(self) -> ProcessImage:
        return self.processes[0]


def load(directory: str | os.PathLike, *, check_cpu: bool = True) -> Checkpoint:
    """The checkpoint in directory, fully validated; ImageError naming file and field otherwise.

    check_cpu=False skips only the comparison with this machine's xsave
    features (show displays an image taken elsewhere; restore never skips it).
    """
    path = Path(directory)
    _check_directory(path)
    inventory = _load_inventory(path)
    if check_cpu:
        check_xsave_features(inventory)
    sizes: dict[str, int] = {}
    records: dict[str, bytes] = {}
    for name, digest in sorted(inventory.files.items()):
        with _open(path, name) as file:
            sizes[name] = os.fstat(file.fileno()).st_size
            if layout.parse_name(name)[0] == "process":
                # Parse the very bytes that were hashed, not a second read of a file that may change.
                records[name] = _read_json_bytes(file, name, sizes[name])
                _check_digest(hashlib.sha256(records[name]).hexdigest(), name, digest)
            else:
                _check_digest(file_sha256(file), name, digest)
    processes = []
    for name, text in records.items():
        process = codec.loads(Process, text, name)
        checks.check_process(process, name, inventory, sizes)
        processes.append(process)
    checks.check_files_claimed(inventory, processes)
    processes.sort(key=lambda p: (p.pid != inventory.root_pid, p.pid))
    return Checkpoint(path, inventory, tuple(_process_image(path, p) for p in processes))


def check_xsave_features(inventory: Inventory) -> None:
    """Refuse an image whose xsave areas were laid out for another xfeature set than this CPU's."""
    here = current_xsave_features()
    if inventory.xsave_features != here:
        raise ImageError(layout.INVENTORY, "xsave_features",
                         f"image has {inventory.xsave_features:#x} ({describe_xsave_features(inventory.xsave_features)}),"
                         f" this CPU has {here:#x} ({describe_xsave_features(here)})")


def _check_directory(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageError(str(path), "", f"image directory: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise ImageError(str(path), "", "not a directory")


def _open(directory: Path, name: str) -> io.FileIO:
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(name, "", f"missing from {directory}") from None
    except OSError as exc:
        raise ImageError(name, "", f"cannot open: {exc.strerror}") from None
    file = io.FileIO(fd, "rb", closefd=True)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise ImageError(name, "", "not a regular file")
    return file


def _read_json_bytes(file: io.FileIO, name: str, size: int) -> bytes:
    if size > JSON_SIZE_MAX:
        raise ImageError(name, "", f"{size} bytes is larger than any record this tool writes ({JSON_SIZE_MAX})")
    data = file.readall()
    if len(data) != size:
        raise ImageError(name, "", f"changed while being read ({len(data)} of {size} bytes)")
    return data


def _check_digest(actual: str, name: str, expected: str) -> None:
    if actual != expected:
        raise ImageError(name, "", f"sha256 {actual} does not match inventory.json ({expected}): "
                                   "the file is truncated or corrupt")


def _load_inventory(directory: Path) -> Inventory:
    name = layout.INVENTORY
    if not os.path.lexists(directory / name):
        raise ImageError(name, "", f"missing from {directory}: not an image directory, "
                                   "or the dump that wrote it did not finish")
    with _open(directory, name) as file:
        data = codec.parse_json(_read_json_bytes(file, name, os.fstat(file.fileno()).st_size), name)
    _check_version_first(data)
    inventory = codec.decode(Inventory, data, name)
    checks.check_inventory(inventory)
    return inventory


def _check_version_first(data: Any) -> None:
    """A newer format may have other fields: say "unsupported version", not "unknown field"."""
    if isinstance(data, dict) and "format_version" in data:
        version = data["format_version"]
        if version != layout.FORMAT_VERSION or isinstance(version, bool):
            raise ImageError(layout.INVENTORY, "format_version",
                             f"unsupported version {version!r} (this tool reads {layout.FORMAT_VERSION})")


def _process_image(directory: Path, process: Process) -> ProcessImage:
    return ProcessImage(
        process=process,
        pages_path=directory / layout.pages_file(process.pid),
        xstate_paths={t.tid: directory / layout.xstate_file(t.tid) for t in process.threads},
        vdso_path=None if process.vdso is None else directory / layout.vdso_file(process.pid),
    )
