"""The contract every kind of open file implements: recognise, dump, check, reopen, describe.

Why a base class: the dump, the image checks, the restoring child and `show`
each reach a kind only through these five methods (registry.py picks the
kind), so a kind is complete when its module implements them and nothing
outside files/ names it. docs/architecture.md, "files/: the contract", says
who calls each and when.
"""

from __future__ import annotations

from runtime.errors import ImageError
from runtime.images.model import FdKind, FileEntry
from runtime.kernel.procfs.fds import OpenFile


class FileKindBase:
    """One kind of open file description; a module defines one subclass and one instance of it."""

    kind: FdKind  # what the image records in FileEntry.kind

    def matches(self, open_file: OpenFile, shell_job: bool) -> bool:
        """This kind dumps open_file (the first kind in registry.KINDS that matches does)."""
        raise NotImplementedError

    def refusal_hint(self, open_file: OpenFile) -> str:
        """When no kind matches: what would have made this kind take open_file (" (with ...)"), or ""."""
        return ""

    def dump(self, pid: int, open_file: OpenFile, file_id: int) -> FileEntry:
        """The entry a restore reopens (runs with pid stopped); a DumpError naming the fd if it cannot be."""
        raise NotImplementedError

    def check(self, entry: FileEntry, file: str, field: str) -> None:
        """An ImageError naming file and field (e.g. "files[2]") if entry is not one this kind restores."""
        raise NotImplementedError

    def open(self, entry: FileEntry, number: int, inheritable: bool, pid: int) -> int:
        """entry opened as fd number in the restoring child (with the image's fs identity): number.

        A RestoreError naming the dumped pid and the fd if it cannot be.
        """
        raise NotImplementedError

    def describe(self, entry: FileEntry) -> tuple[str, str]:
        """(what, mode) for `show`: the path or what stands for it, and the file's mode or ""."""
        raise NotImplementedError


def refuse_payload(entry: FileEntry, file: str, field: str, expected: bool) -> None:
    """An ImageError if entry has a node and expected is False, or has none and expected is True."""
    if (entry.node is not None) != expected:
        need = "needs a path" if expected else "has no path"
        raise ImageError(file, f"{field}.node", f"a file of kind {entry.kind.value} {need}")
