"""A process's memory through /proc/PID/mem: one read or write, not word-sized ptrace peeks.

Why here: /proc/PID/mem reads and writes pages whatever their protection
(as PTRACE_POKEDATA does), in one system call, for a caller that may ptrace
the process; the dump, infection, the vDSO code and the tests all need it,
with one error saying which process, where and how much.
"""

import os

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import proc_path, translated


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """size bytes at addr in pid's address space (the process must be stopped or traced by us)."""
    with translated(pid, "mem"):
        fd = os.open(proc_path(pid, "mem"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, addr)
    except OSError as exc:
        raise ProcfsError(pid, f"reading {size} bytes of /proc/{pid}/mem at {addr:#x}: "
                               f"{os.strerror(exc.errno)}") from exc
    finally:
        os.close(fd)
    if len(data) != size:
        raise ProcfsError(pid, f"reading /proc/{pid}/mem at {addr:#x}: {len(data)} of {size} bytes")
    return data


def copy_memory(pid: int, addr: int, size: int, out_fd: int, chunk: int = 1 << 20) -> None:
    """size bytes at addr in pid's address space appended to out_fd, unreadable pages included (FOLL_FORCE)."""
    with translated(pid, "mem"):
        fd = os.open(proc_path(pid, "mem"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < size:
            data = os.pread(fd, min(chunk, size - done), addr + done)
            if not data:
                raise OSError(0, "end of memory")
            os.write(out_fd, data)
            done += len(data)
    except OSError as exc:
        raise ProcfsError(pid, f"copying {size} bytes of /proc/{pid}/mem at {addr + done:#x}: "
                               f"{exc.strerror}") from exc
    finally:
        os.close(fd)


def write_memory(pid: int, addr: int, data: bytes) -> None:
    """Write data at addr in pid's address space, read-only pages included (as POKEDATA may)."""
    with translated(pid, "mem"):
        fd = os.open(proc_path(pid, "mem"), os.O_RDWR | os.O_CLOEXEC)
    try:
        written = os.pwrite(fd, data, addr)
    except OSError as exc:
        raise ProcfsError(pid, f"writing {len(data)} bytes of /proc/{pid}/mem at {addr:#x}: "
                               f"{os.strerror(exc.errno)}") from exc
    finally:
        os.close(fd)
    if written != len(data):
        raise ProcfsError(pid, f"writing /proc/{pid}/mem at {addr:#x}: {written} of {len(data)} bytes")
