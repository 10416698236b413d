"""The names and permissions of the files in an image directory, and the format version.

Why one module: the writer, the loader, show and the documentation
(docs/images.md) must agree on every file name; a name is built here and
parsed here, nowhere else. The loader accepts only names this module can
parse, so an inventory cannot point a restore at `../../etc/shadow`.
"""

import re

FORMAT_VERSION = 3  # 2: fd slots apart from file entries (runtime/files/); 3: per-thread name, scheduling, affinity
TOOL = "revive"

DIR_MODE = 0o700
FILE_MODE = 0o600

INVENTORY = "inventory.json"

_NAME = re.compile(r"(process|pages|xstate|vdso)-([1-9][0-9]{0,9})\.(json|img)\Z")
_SUFFIX = {"process": "json", "pages": "img", "xstate": "img", "vdso": "img"}


def process_file(pid: int) -> str:
    """Process (model.Process) as JSON: everything but page data, xstate and vDSO bytes."""
    return f"process-{pid}.json"


def pages_file(pid: int) -> str:
    """The process's page data: its page runs back to back, in vaddr order."""
    return f"pages-{pid}.img"


def xstate_file(tid: int) -> str:
    """One thread's raw NT_X86_XSTATE xsave area."""
    return f"xstate-{tid}.img"


def vdso_file(pid: int) -> str:
    """The bytes of the process's [vdso] mapping at dump."""
    return f"vdso-{pid}.img"


def parse_name(name: str) -> tuple[str, int] | None:
    """(kind, pid or tid) for a file name this format defines, else None."""
    match = _NAME.match(name)
    if match is None or _SUFFIX[match.group(1)] != match.group(3):
        return None
    return match.group(1), int(match.group(2))
