"""Writing an image directory: the dump hands its results to an ImageWriter.

Why a writer object: the dump produces the files of an image in pieces and
at different times (page data streamed while the parasite runs, xstate per
thread, the process record last), and only when every piece is there can
the inventory be written. The inventory is the commit point: it is written
last, to a temporary name renamed into place, so a dump that fails at any
step leaves a directory the loader refuses ("no inventory.json") and
discard() takes away what it wrote. Page data never passes through Python:
pages_file() gives the dump a file to os.splice() into. Before writing the
inventory, finish() runs the loader's own semantic checks, so a dump cannot
produce an image its restore would refuse.

Why so wary of the directory: an image holds all of a process's memory,
and the dump usually runs as root. A directory another user owns, or may
write to, lets that user read the image or plant files the dump would
write into (an empty file with an image's name, which stays theirs), so it
is refused with the reason; a directory of the caller's own that group or
others may write is accepted only with force_dir (--force-dir), and made
0700 before anything is written. Every file is created anew (O_CREAT |
O_EXCL | O_NOFOLLOW, mode 0600) relative to the directory opened once. A
directory holding an earlier image has that image removed first (the
names of the format, nothing else), so no stale file of it stays beside
the new one; a directory holding anything else is refused.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path

from runtime.errors import ImageError, shorten
from runtime.images import checks, codec, digest, host, names as layout
from runtime.images.cpu import current_xsave_features
from runtime.images.model import Inventory, Process, Tree

log = logging.getLogger(__name__)

TEMPORARY_INVENTORY = f".{layout.INVENTORY}.tmp"


class ImageWriter:
    """One image directory being written: prepare it, add files, finish() with the inventory, or discard()."""

    def __init__(self, directory: str | os.PathLike, *, force_dir: bool = False):
        self.directory = Path(directory)
        self._names: set[str] = set()
        self._processes: dict[int, Process] = {}
        self._xstate_sizes: dict[int, int] = {}
        self._open: list[io.FileIO] = []
        self._created = False
        self._dir_fd = self._prepare(force_dir)

    def _fail(self, reason: str) -> ImageError:
        return ImageError(shorten(str(self.directory), 200), "", reason)

    def _prepare(self, force_dir: bool) -> int:
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.directory, layout.DIR_MODE)
            self._created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._fail(f"cannot create the image directory: {exc.strerror}") from exc
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            # O_NOFOLLOW makes a symlink ELOOP, and O_DIRECTORY anything else ENOTDIR.
            reason = "a symbolic link: not followed" if os.path.islink(self.directory) else \
                "not a directory" if isinstance(exc, NotADirectoryError) else exc.strerror
            raise self._fail(f"cannot use it as the image directory: {reason}") from exc
        try:
            self._check_owner_and_mode(os.fstat(dir_fd), force_dir)
            os.fchmod(dir_fd, layout.DIR_MODE)
            _remove_earlier_image(dir_fd, self._fail)
        except OSError as exc:
            os.close(dir_fd)
            raise self._fail(f"cannot prepare the image directory: {exc.strerror}") from exc
        except BaseException:
            os.close(dir_fd)
            raise
        return dir_fd

    def _check_owner_and_mode(self, st: os.stat_result, force_dir: bool) -> None:
        if st.st_uid != os.geteuid():
            raise self._fail(f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
                             "its owner could read the image or plant files in it; use a directory of your own")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not force_dir:
            raise self._fail(f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): another user "
                             "could plant files the dump would write into; make it 0700, or pass --force-dir "
                             "to have the dump make it 0700")

    def _create(self, name: str) -> io.FileIO:
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                         layout.FILE_MODE, dir_fd=self._dir_fd)
            # The umask may have cut the mode O_CREAT gave it.
            os.fchmod(fd, layout.FILE_MODE)
        except OSError as exc:
            raise ImageError(name, "", f"cannot create in {shorten(str(self.directory), 200)}: "
                                       f"{exc.strerror}") from exc
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

    def shmem_file(self, shmem_id: int) -> io.FileIO:
        """shmem-ID.img opened for writing: a shared memory object's extents, back to back (closed by finish())."""
        file = self._create(layout.shmem_file(shmem_id))
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

    def finish(self, tree: Tree, *, kernel_release: str | None = None,
               xsave_features: int | None = None) -> Inventory:
        """Write tree.json, check it and every process against the files written, then write inventory.json last.

        kernel_release and xsave_features default to this machine's (a test
        passes others to build an image from a different machine).
        """
        for file in self._open:
            file.close()
        self._open.clear()
        self._write(layout.TREE, codec.dumps(tree))
        sizes = {}
        digests = {}
        for name in sorted(self._names):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
            with io.FileIO(fd, "rb", closefd=True) as file:
                sizes[name] = os.fstat(file.fileno()).st_size
                digests[name] = digest.of_file(file)
        inventory = Inventory(
            format_version=layout.FORMAT_VERSION,
            tool=layout.TOOL,
            kernel_release=os.uname().release if kernel_release is None else kernel_release,
            xsave_features=current_xsave_features() if xsave_features is None else xsave_features,
            xstate_size=self._xstate_size(),
            root_pid=tree.processes[0].pid,
            files=digests,
        )
        checks.check_inventory(inventory)
        shared_files = frozenset(entry.id for entry in tree.files)
        for pid, process in sorted(self._processes.items()):
            checks.check_process(process, layout.process_file(pid), inventory, sizes, host.mmap_min_addr(),
                                 host.nr_open(), shared_files)
        checks.check_tree(tree, self._processes, inventory, sizes)
        checks.check_files_claimed(inventory, self._processes.values(), tree)
        self._write(TEMPORARY_INVENTORY, codec.dumps(inventory))
        os.replace(TEMPORARY_INVENTORY, layout.INVENTORY, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._names.discard(TEMPORARY_INVENTORY)
        self._names.add(layout.INVENTORY)
        return inventory

    def close(self) -> None:
        """The image is complete and the dump succeeded: nothing of it will be discarded any more."""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
        self._names.clear()

    def discard(self) -> None:
        """Take away what this writer wrote (and the directory, if it made it), after a failed dump.

        Also after finish(): a dump that fails at its very end (the kill) leaves no image either.
        """
        for file in self._open:
            file.close()
        self._open.clear()
        if self._dir_fd < 0:
            return
        # The inventory first: an image without it is never taken for a complete one.
        for name in sorted(self._names, key=lambda name: name != layout.INVENTORY):
            try:
                os.unlink(name, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
        self._names.clear()
        os.close(self._dir_fd)
        self._dir_fd = -1
        if self._created:
            try:
                os.rmdir(self.directory)
            except OSError as exc:  # something else was put there meanwhile: not ours to remove
                log.warning("image directory %s left behind: %s", self.directory, exc.strerror)

    def _xstate_size(self) -> int:
        sizes = set(self._xstate_sizes.values())
        if len(sizes) != 1:
            detail = "none written" if not sizes else f"sizes differ: {sorted(sizes)}"
            raise ImageError(str(self.directory), "xstate", f"every thread needs one xsave area of one size ({detail})")
        return sizes.pop()


def _remove_earlier_image(dir_fd: int, fail) -> None:
    """Remove an earlier image's files from the directory; refuse (fail(reason)) if it holds anything else.

    Everything is looked at before anything is removed: a refused directory is left as it was.
    """
    names = os.listdir(dir_fd)
    foreign = [n for n in names if n not in (layout.INVENTORY, TEMPORARY_INVENTORY) and layout.parse_name(n) is None]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise fail(f"holds {shorten(repr(sorted(foreign)[0]))}{more}, which is not part of an image: "
                   "dump into an empty directory or one holding an earlier image")
    # The inventory first: from then on the directory is no image, whatever is left of it.
    for name in sorted(names, key=lambda n: n != layout.INVENTORY):
        os.unlink(name, dir_fd=dir_fd)
