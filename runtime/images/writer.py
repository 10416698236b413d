"""Writing an image directory: the dump hands its results to an ImageWriter.

Why a writer object: the dump produces the files of an image in pieces and
at different times (page data streamed while the parasite runs, xstate per
thread, the process record last), and only when every piece is there can
the inventory be written. The inventory is the commit point: it is written
last, to a temporary name renamed into place, and any stale inventory of an
earlier dump is removed first, so a dump that fails at any step leaves a
directory the loader refuses ("no inventory.json") rather than a mix of
old and new files. Page data never passes through Python: pages_file()
gives the dump a file to os.splice() into. Before writing the inventory,
finish() runs the loader's own semantic checks, so a dump cannot produce
an image its restore would refuse.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from runtime.errors import ImageError
from runtime.images import checks, codec, layout
from runtime.images.cpu import current_xsave_features
from runtime.images.model import Inventory, Process


def file_sha256(file: io.FileIO | io.BufferedReader) -> str:
    """Digest of an open file read in chunks (a pages file may be far larger than memory)."""
    file.seek(0)
    return hashlib.file_digest(file, "sha256").hexdigest()


class ImageWriter:
    """One image directory being written: create it, add files, finish() with the inventory."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._names: set[str] = set()
        self._processes: dict[int, Process] = {}
        self._xstate_sizes: dict[int, int] = {}
        self._open: list[io.FileIO] = []
        self._prepare()

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(mode=layout.DIR_MODE, parents=True, exist_ok=True)
            if not self.directory.is_dir() or self.directory.is_symlink():
                raise ImageError(str(self.directory), "", "not a directory")
            os.chmod(self.directory, layout.DIR_MODE)
            (self.directory / layout.INVENTORY).unlink(missing_ok=True)
        except OSError as exc:
            raise ImageError(str(self.directory), "", f"cannot prepare the image directory: {exc.strerror}") from exc

    def _create(self, name: str) -> io.FileIO:
        path = self.directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                         layout.FILE_MODE)
            # O_CREAT leaves the mode of a file from an earlier dump as it was, and the umask may have cut it.
            os.fchmod(fd, layout.FILE_MODE)
        except OSError as exc:
            raise ImageError(name, "", f"cannot create in {self.directory}: {exc.strerror}") from exc
        self._names.add(name)
        return io.FileIO(fd, "wb", closefd=True)

    def _write(self, name: str, data: bytes) -> None:
        with self._create(name) as file:
            try:
                file.write(data)
            except OSError as exc:
                raise ImageError(name, "", f"cannot write {len(data)} bytes: {exc.strerror}") from exc

    def pages_file(self, pid: int) -> io.FileIO:
        """pages-PID.img opened for writing: splice the page runs into it in vaddr order.

        The writer closes it in finish() if the caller has not; its size must
        equal the sum of the page runs of the Process written for pid.
        """
        file = self._create(layout.pages_file(pid))
        self._open.append(file)
        return file

    def write_xstate(self, tid: int, xstate: bytes) -> None:
        self._write(layout.xstate_file(tid), xstate)
        self._xstate_sizes[tid] = len(xstate)

    def write_vdso(self, pid: int, vdso: bytes) -> None:
        self._write(layout.vdso_file(pid), vdso)

    def write_process(self, process: Process) -> None:
        self._write(layout.process_file(process.pid), codec.dumps(process))
        self._processes[process.pid] = process

    def finish(self, root_pid: int, *, kernel_release: str | None = None,
               xsave_features: int | None = None) -> Inventory:
        """Check every process against the files written, then write inventory.json last.

        kernel_release and xsave_features default to this machine's (a test
        passes others to build an image from a different machine).
        """
        for file in self._open:
            file.close()
        self._open.clear()
        sizes = {}
        digests = {}
        for name in sorted(self._names):
            with open(self.directory / name, "rb") as file:
                sizes[name] = os.fstat(file.fileno()).st_size
                digests[name] = file_sha256(file)
        inventory = Inventory(
            format_version=layout.FORMAT_VERSION,
            tool=layout.TOOL,
            kernel_release=os.uname().release if kernel_release is None else kernel_release,
            xsave_features=current_xsave_features() if xsave_features is None else xsave_features,
            xstate_size=self._xstate_size(),
            root_pid=root_pid,
            files=digests,
        )
        checks.check_inventory(inventory)
        for pid, process in sorted(self._processes.items()):
            checks.check_process(process, layout.process_file(pid), inventory, sizes)
        checks.check_files_claimed(inventory, self._processes.values())
        temporary = f".{layout.INVENTORY}.tmp"
        self._write(temporary, codec.dumps(inventory))
        self._names.discard(temporary)
        os.replace(self.directory / temporary, self.directory / layout.INVENTORY)
        return inventory

    def _xstate_size(self) -> int:
        sizes = set(self._xstate_sizes.values())
        if len(sizes) != 1:
            detail = "none written" if not sizes else f"sizes differ: {sorted(sizes)}"
            raise ImageError(str(self.directory), "xstate", f"every thread needs one xsave area of one size ({detail})")
        return sizes.pop()
