"""A thread's two links to futexes in its memory: clear_child_tid and the robust list.

Why they matter: the kernel zeroes and wakes `clear_child_tid` when the
thread exits (pthread_join waits on it), and walks the robust list when it
dies, so another process waiting on a robust mutex it held gets EOWNERDEAD
instead of hanging forever. Both live in the kernel's task, not in memory:
the restoring child is a raw clone3 copy of the runtime, which has neither,
so they are set again with injected syscalls once the task is in its own
context (the restorer area is gone; nothing can fail after that but these).
The robust list is read from outside with get_robust_list; clear_child_tid
only the thread itself can tell (the parasite's PR_GET_TID_ADDRESS).
"""

import ctypes
import os

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError, RestoreError
from runtime.images.model import ThreadCore
from runtime.kernel.libc import libc as _libc



def read_robust_list(tid: int) -> tuple[int, int]:
    """(head, len) the thread registered with set_robust_list; (0, 0) when none."""
    head, length = ctypes.c_uint64(), ctypes.c_size_t()
    if _libc.syscall(arch.NR_GET_ROBUST_LIST, tid, ctypes.byref(head), ctypes.byref(length)) != 0:
        raise DumpError(tid, f"get_robust_list: {os.strerror(ctypes.get_errno())}")
    return head.value, length.value


def set_links(tid: int, thread: ThreadCore, remote_syscall) -> None:
    """Register both links again from inside the stopped task (remote_syscall runs one syscall in it)."""
    remote_syscall(arch.NR_SET_TID_ADDRESS, thread.clear_child_tid)  # returns the tid: it cannot fail
    if thread.robust_list:
        result = remote_syscall(arch.NR_SET_ROBUST_LIST, thread.robust_list, thread.robust_list_len)
        if result != 0:
            raise RestoreError(tid, f"set_robust_list({thread.robust_list:#x}, {thread.robust_list_len}): "
                                    f"{os.strerror(-result)}")
