"""The compiled methods of dataclasses, kept across runs of the command line so that it does not compile them again.

Why: Python 3.11 makes each dataclass by writing its methods (__init__,
__repr__, __eq__, and for a frozen one __hash__, __setattr__, __delattr__)
as source text and compiling every one (dataclasses._create_fn calls
exec on the text). The runtime's ninety-odd model and state classes cost a
command about 500 compilations, half the time of its imports and longer
than the rest of a dump of a small process (issue 18). The code compiled
from a given text is always the same, so it is kept the way the interpreter
keeps a module's bytecode in __pycache__:

- keyed by the text itself: a class that changes makes a new text, never a
  stale hit; the file is for this interpreter's bytecode (magic number) only;
- written only when a run compiled something new, to a new file renamed over
  the old, so a concurrent command reads the old file or the new, never half;
- not written under -B or PYTHONDONTWRITEBYTECODE (read, as .pyc files are),
  nor where the package's __pycache__ cannot be written; a file that cannot
  be read is as good as none.

Only the program (`python -m runtime`, the `revive` script: cli.run) uses it,
from its start to its end; a program or test importing the runtime compiles
as usual. What runs is exactly what the interpreter would have compiled from
the same text: trusting the file is trusting the .pyc files beside it.
"""

import builtins
import contextlib
import dataclasses
import importlib.util
import marshal
import os
import sys
from types import CodeType

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
# More entries than this (classes changed many times over) and a write keeps only those this run used.
MAX_ENTRIES = 4096


def default_path() -> str:
    return os.path.join(CACHE_DIR, f"dataclass-methods.{sys.implementation.cache_tag}.bin")


class CodeCache:
    """Source text -> code object, loaded from path; exec() compiles only a text it has not seen."""

    def __init__(self, path: str):
        self.path = path
        self.codes: dict[str, CodeType] = _read(path)
        self.used: set[str] = set()
        self.compiled = 0  # texts this run compiled (not found in the file)

    def exec(self, source, globals=None, locals=None) -> None:
        """builtins.exec, with the code of a text compiled once across runs."""
        if not isinstance(source, str):
            return builtins.exec(source, globals, locals)
        code = self.codes.get(source)
        if code is None:
            code = self.codes[source] = compile(source, "<string>", "exec")
            self.compiled += 1
        self.used.add(source)
        return builtins.exec(code, globals, locals)

    def save(self) -> None:
        """Write the cache if this run compiled something new (and bytecode may be written)."""
        if not self.compiled or sys.dont_write_bytecode:
            return
        codes = self.codes
        if len(codes) > MAX_ENTRIES:
            codes = {source: code for source, code in codes.items() if source in self.used}
        temporary = f"{self.path}.{os.getpid()}"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(importlib.util.MAGIC_NUMBER + marshal.dumps(codes))
            os.replace(temporary, self.path)
        except OSError:
            # As with a .pyc that cannot be written: the next run compiles again.
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _read(path: str) -> dict[str, CodeType]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return {}
    magic = importlib.util.MAGIC_NUMBER
    if not data.startswith(magic):
        return {}
    try:
        codes = marshal.loads(memoryview(data)[len(magic):])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(codes, dict):
        return {}
    return {source: code for source, code in codes.items() if isinstance(source, str) and isinstance(code, CodeType)}


def install(path: str | None = None) -> CodeCache:
    """Make dataclasses compile through a CodeCache (its module-level exec shadows the builtin) until uninstall."""
    cache = CodeCache(default_path() if path is None else path)
    dataclasses.exec = cache.exec
    return cache


def uninstall() -> None:
    vars(dataclasses).pop("exec", None)
