"""The one handle on the C library, for the calls Python's os module lacks (prctl, raw syscalls, mmap at an address).

Why one: each ctypes handle carries its own function prototypes (restype,
argtypes); declaring them once here means a raw syscall returns a C long
everywhere (the default int would cut a 64-bit address), and errno is kept
for every call (use_errno) so a failure can be named.
"""

import ctypes

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
