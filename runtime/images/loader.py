"""Loading an image directory: everything validated before anything is returned.

Why all at once: restore forks a process with the dumped PID and then hands
the image to a restorer that has already unmapped the old address space;
after that point there is no way to report "this file is corrupt" to anyone.
So load() reads the inventory, checks the format version and this CPU's
xsave features, verifies the digest of every file it lists (a truncated
pages file or a flipped byte anywhere is caught here), decodes every
process record against the model's declared types, and runs the semantic
checks (images/checks.py) that the types cannot express. Whatever is wrong,
the caller gets one ImageError naming the file and field, and nothing has
been forked or mapped.

Every file is opened once and used through that open file afterwards: looked
at with O_PATH and O_NOFOLLOW first (a symlink, a FIFO, a directory or a
device in the image directory is refused by name before anything opens
it: a FIFO would block the open, a device's open has effects, a symlink
would make a restore read something outside the directory), then opened
for reading and checksummed. Small files are read into memory once and
parsed from the bytes that were hashed; each pages file stays open in the
Checkpoint, and the restoring child inherits that descriptor, so a file
swapped after the check is never read. A Checkpoint is a context manager
that closes them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ImageError, shorten
from runtime.images import checks, codec, digest, host, names as layout
from runtime.images.cpu import current_xsave_features, describe_xsave_features
from runtime.images.model import Inventory, Process, Tree
from runtime.images.xsave import check_xsave_area
from runtime.kernel import fileopen

# A JSON record larger than this is not one this tool wrote (a process with
# a million VMAs stays far below it); refusing it keeps a hostile file from
# costing gigabytes of memory in the JSON parser. Files other than pages are
# read whole too, and are smaller still (xstate, vDSO).
SMALL_FILE_MAX = 64 << 20


@dataclass(frozen=True)
class ProcessImage:
    """One process of a checkpoint and its data: the pages file open, the small files' bytes.

    The paths are the files' names, for messages and show; nothing opens them again.
    """

    process: Process
    pages: io.FileIO = field(compare=False)  # pages-PID.img, opened and checksummed by the loader
    xstates: dict[int, bytes]  # tid -> the bytes of xstate-TID.img
    vdso_image: bytes | None  # the bytes of vdso-PID.img
    pages_path: Path
    xstate_paths: dict[int, Path]  # tid -> xstate-TID.img
    vdso_path: Path | None


@dataclass(frozen=True)
class Checkpoint:
    """A validated image directory; close() (or a with block) closes the pages and shared memory files."""

    directory: Path
    inventory: Inventory
    tree: Tree
    processes: tuple[ProcessImage, ...]  # the live processes in the tree's order: the root first
    shmem: dict[int, io.FileIO] = field(compare=False)  # SharedMemory.id -> its shmem-ID.img, opened and checked

    @property
    def root(self) -> ProcessImage:
        return self.processes[0]

    def close(self) -> None:
        for image in self.processes:
            image.pages.close()
        for file in self.shmem.values():
            file.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def load(directory: str | os.PathLike, *, check_cpu: bool = True) -> Checkpoint:
    """The checkpoint in directory, fully validated; ImageError naming file and field otherwise.

    check_cpu=False skips only the comparison with this machine's xsave
    features (show displays an image taken elsewhere; restore never skips it).
    """
    path = Path(directory)
    dir_fd = _open_directory(path)
    opened: dict[str, io.FileIO] = {}
    try:
        inventory = _load_inventory(dir_fd, path)
        if check_cpu:
            check_xsave_features(inventory)
        sizes: dict[str, int] = {}
        contents: dict[str, bytes] = {}
        for name, expected in sorted(inventory.files.items()):
            file = _open(dir_fd, name, path)
            sizes[name] = os.fstat(file.fileno()).st_size
            if layout.parse_name(name)[0] in ("pages", "shmem"):
                opened[name] = file
                _check_digest(digest.of_file(file), name, expected)
            else:
                with file:
                    # Parse the very bytes that were hashed, not a second read of a file that may change.
                    contents[name] = _read_whole(file, name, sizes[name])
                _check_digest(digest.of_bytes(contents[name]), name, expected)
        if layout.TREE not in contents:
            raise ImageError(layout.INVENTORY, "files", f"no {layout.TREE}: every image has its tree")
        tree = codec.loads(Tree, contents[layout.TREE], layout.TREE)
        shared_files = frozenset(entry.id for entry in tree.files)
        processes = {}
        for name, data in contents.items():
            if layout.parse_name(name)[0] == "process":
                process = codec.loads(Process, data, name)
                checks.check_process(process, name, inventory, sizes, host.mmap_min_addr(), host.nr_open(),
                                     shared_files)
                processes[process.pid] = process
        checks.check_tree(tree, processes, inventory, sizes)
        checks.check_files_claimed(inventory, processes.values(), tree)
        if check_cpu:
            for process in processes.values():
                for thread in process.threads:
                    name = layout.xstate_file(thread.tid)
                    check_xsave_area(contents[name], inventory.xsave_features, name)
        live = tuple(_process_image(path, processes[node.pid], opened, contents) for node in tree.processes
                     if node.zombie_status is None)
        shmem = {obj.id: opened[layout.shmem_file(obj.id)] for obj in tree.shared_memory}
        return Checkpoint(path, inventory, tree, live, shmem)
    except BaseException:
        for file in opened.values():
            file.close()
        raise
    finally:
        os.close(dir_fd)


def check_xsave_features(inventory: Inventory) -> None:
    """Refuse an image whose xsave areas were laid out for another xfeature set than this CPU's."""
    here = current_xsave_features()
    if inventory.xsave_features != here:
        raise ImageError(layout.INVENTORY, "xsave_features",
                         f"image has {inventory.xsave_features:#x} ({describe_xsave_features(inventory.xsave_features)}),"
                         f" this CPU has {here:#x} ({describe_xsave_features(here)})")


def _open_directory(path: Path) -> int:
    try:
        # O_PATH: the loader never lists the directory, so search permission is all it needs.
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise ImageError(shorten(str(path)), "", "not a directory") from None
    except OSError as exc:
        raise ImageError(shorten(str(path)), "", f"image directory: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _open(dir_fd: int, name: str, directory: Path) -> io.FileIO:
    """name in the directory, opened for reading only if it is a regular file (never through a symlink)."""
    try:
        path_fd, st = fileopen.look(name, dir_fd=dir_fd, follow=False)
    except FileNotFoundError:
        raise ImageError(name, "", f"missing from {shorten(str(directory))}") from None
    except OSError as exc:
        raise ImageError(name, "", f"cannot open: {_reason(exc)}") from None
    try:
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(name, "", f"{fileopen.describe_kind(st.st_mode)}, not a regular file: not opened")
        try:
            fd = fileopen.reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ImageError(name, "", f"cannot open: {_reason(exc)}") from None
    finally:
        os.close(path_fd)
    return io.FileIO(fd, "rb", closefd=True)


def _read_whole(file: io.FileIO, name: str, size: int) -> bytes:
    if size > SMALL_FILE_MAX:
        raise ImageError(name, "", f"{size} bytes is larger than any such file this tool writes ({SMALL_FILE_MAX})")
    try:
        data = file.readall()
    except OSError as exc:
        raise ImageError(name, "", f"cannot read: {_reason(exc)}") from None
    if len(data) != size:
        raise ImageError(name, "", f"changed while being read ({len(data)} of {size} bytes)")
    return data


def _check_digest(actual: str, name: str, expected: str) -> None:
    if actual != expected:
        raise ImageError(name, "", f"digest {actual} does not match inventory.json ({shorten(expected)}): "
                                   "the file is truncated or corrupt")


def _load_inventory(dir_fd: int, directory: Path) -> Inventory:
    name = layout.INVENTORY
    try:
        file = _open(dir_fd, name, directory)
    except ImageError as exc:
        if exc.reason.startswith("missing from"):
            raise ImageError(name, "", f"{exc.reason}: not an image directory, "
                                       "or the dump that wrote it did not finish") from None
        raise
    with file:
        data = codec.parse_json(_read_whole(file, name, os.fstat(file.fileno()).st_size), name)
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
                             f"unsupported version {shorten(repr(version))} (this tool reads {layout.FORMAT_VERSION})")


def _process_image(directory: Path, process: Process, opened: dict[str, io.FileIO],
                   contents: dict[str, bytes]) -> ProcessImage:
    vdso = None if process.vdso is None else layout.vdso_file(process.pid)
    if vdso is not None and hashlib.sha256(contents[vdso]).hexdigest() != process.vdso.sha256:
        # The vDSO's own identity (mm/vdso.py compares it with the running one), not the file's digest.
        raise ImageError(layout.process_file(process.pid), "vdso.sha256",
                         f"{shorten(process.vdso.sha256)} is not the sha256 of {vdso}")
    return ProcessImage(
        process=process,
        pages=opened[layout.pages_file(process.pid)],
        xstates={t.tid: contents[layout.xstate_file(t.tid)] for t in process.threads},
        vdso_image=None if vdso is None else contents[vdso],
        pages_path=directory / layout.pages_file(process.pid),
        xstate_paths={t.tid: directory / layout.xstate_file(t.tid) for t in process.threads},
        vdso_path=None if vdso is None else directory / vdso,
    )
