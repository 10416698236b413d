"""A thread's two links to futexes in its memory: clear_child_tid and the robust list.

Why they matter: the kernel zeroes and wakes `clear_child_tid` when the
thread exits (pthread_join waits on it), and walks the robust list when it
dies, so another process waiting on a robust mutex it held gets EOWNERDEAD
instead of hanging forever. Both live in the kernel's task, not in memory,
so each thread sets both again itself in the restorer (set_futex_links,
pie/common/thread.c). The robust list is read here from outside with
get_robust_list; clear_child_tid only the thread itself can tell (the
parasite's PR_GET_TID_ADDRESS).
"""

import ctypes
import os

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError
from runtime.kernel.libc import libc as _libc


def read_robust_list(tid: int) -> tuple[int, int]:
    """(head, len) the thread registered with set_robust_list; (0, 0) when none."""
    head, length = ctypes.c_uint64(), ctypes.c_size_t()
    if _libc.syscall(arch.NR_GET_ROBUST_LIST, tid, ctypes.byref(head), ctypes.byref(length)) != 0:
        raise DumpError(tid, f"get_robust_list: {os.strerror(ctypes.get_errno())}")
    return head.value, length.value
