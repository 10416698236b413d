"""The names and permissions of the files in an image directory, and the format version.

Why one module: the writer, the loader, show and the documentation
(docs/images.md) must agree on every file name; a name is built here and
parsed here, nowhere else. The loader accepts only names this module can
parse, so an inventory cannot point a restore at `../../etc/shadow`.
"""

import re

FORMAT_VERSION = 5  # 2: fd slots apart from file entries (runtime/files/); 3: per-thread name, scheduling, affinity;
# 4: process trees (tree.json), shared memory objects (shmem-ID.img); 5: POSIX timers, SysV segments, inet sockets,
# unix sockets' waiting connections and outside names, external and packet-mode pipes
TOOL = "revive"

DIR_MODE = 0o700
FILE_MODE = 0o600

INVENTORY = "inventory.json"
TREE = "tree.json"  # model.Tree: the processes, who is whose parent, what they share

_NAME = re.compile(r"(process|pages|xstate|vdso|shmem)-([1-9][0-9]{0,19})\.(json|img)\Z")
_SUFFIX = {"process": "json", "pages": "img", "xstate": "img", "vdso": "img", "shmem": "img"}


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


def shmem_file(shmem_id: int) -> str:
    """A shared memory object's data: its extents back to back, in ascending order."""
    return f"shmem-{shmem_id}.img"


def parse_name(name: str) -> tuple[str, int] | None:
    """(kind, pid, tid or shared memory id; 0 for tree.json) for a file name this format defines, else None."""
    if name == TREE:
        return "tree", 0
    match = _NAME.match(name)
    if match is None or _SUFFIX[match.group(1)] != match.group(3):
        return None
    return match.group(1), int(match.group(2))
