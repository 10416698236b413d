"""How many bytes a task has read so far: `rchar` of /proc/PID/io.

Why rchar: the kernel adds to it every byte a read-family syscall (read,
pread64, readv, preadv ...) returns to the task, whatever the file, and a
task's counters start at zero when it is created. The restoring child reads
nothing but its 4-byte go message before the restorer's preadv fills its
pages, so its rchar tells how far the page fill has got, read from outside
without stopping or touching the child.
"""

from runtime.errors import ProcessError
from runtime.kernel.procfs.files import read_text


def bytes_read(pid: int) -> int:
    """rchar: the bytes pid's read-family syscalls have returned since it was created."""
    text = read_text(pid, "io")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "rchar":
            return int(value)
    raise ProcessError(pid, f"/proc/{pid}/io has no rchar line")
