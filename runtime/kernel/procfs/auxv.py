"""The auxiliary vector of a process from /proc/PID/auxv.

Why: restore hands it back to the kernel with PR_SET_MM_MAP (programs and
the vDSO lookup read it through getauxval), and the kernel prints it as
the raw (type, value) u64 pairs it put on the stack, ending with AT_NULL.
"""

import struct

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import read_bytes

AT_NULL = 0
AT_SYSINFO_EHDR = 33  # the vDSO's load address


def parse_auxv(pid: int, data: bytes) -> tuple[int, ...]:
    """(type, value) pairs flattened, up to and including the AT_NULL pair."""
    if len(data) % 16:
        raise ProcfsError(pid, f"/proc/{pid}/auxv: {len(data)} bytes is not a whole number of entries")
    words = struct.unpack(f"<{len(data) // 8}Q", data)
    for index in range(0, len(words), 2):
        if words[index] == AT_NULL:
            return words[:index + 2]
    raise ProcfsError(pid, f"/proc/{pid}/auxv: no AT_NULL entry")


def read_auxv(pid: int) -> tuple[int, ...]:
    return parse_auxv(pid, read_bytes(pid, "auxv"))


def auxv_value(auxv: tuple[int, ...], kind: int) -> int | None:
    for index in range(0, len(auxv), 2):
        if auxv[index] == kind:
            return auxv[index + 1]
    return None
