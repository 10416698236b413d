"""The xsave feature set of the CPU and kernel this runtime runs on.

Why: a thread's saved xstate is an xsave area laid out for the xfeatures
the dumping machine had enabled (XCR0). rt_sigreturn into such an area on a
machine with a different set either fails or silently drops registers (an
AVX-512 program restored where AVX-512 is off), so the inventory records
the set at dump and the loader refuses a mismatch. Both sides ask the
kernel the same question: arch_prctl(ARCH_GET_XCOMP_SUPP) returns the user
xfeatures the kernel supports, which is XCR0 minus the supervisor bits (on
this machine 0xe7, what XGETBV returns, while dmesg's 0x18e7 adds the
supervisor CET states no user xsave area carries).
"""

import ctypes
import functools
import os

from runtime.kernel.libc import libc as _libc

NR_ARCH_PRCTL = 158
ARCH_GET_XCOMP_SUPP = 0x1021



@functools.cache
def current_xsave_features() -> int:
    """XCR0's user xfeature bits on this machine (x87, SSE, AVX, AVX-512, PKRU, AMX ...)."""
    features = ctypes.c_uint64()
    if _libc.syscall(NR_ARCH_PRCTL, ARCH_GET_XCOMP_SUPP, ctypes.byref(features)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"arch_prctl(ARCH_GET_XCOMP_SUPP): {os.strerror(err)}")
    return features.value


def describe_xsave_features(features: int) -> str:
    """The xfeature names of a mask, e.g. 'x87 sse avx avx512 pkru', for messages and show."""
    names = [name for bit, name in _XFEATURE_NAMES if features & bit]
    unknown = features & ~sum(bit for bit, _ in _XFEATURE_NAMES)
    if unknown:
        names.append(f"{unknown:#x}")
    return " ".join(names) or "none"


# Bit numbers from arch/x86/include/asm/fpu/types.h (enum xfeature).
_XFEATURE_NAMES = (
    (1 << 0, "x87"),
    (1 << 1, "sse"),
    (1 << 2, "avx"),
    (1 << 3 | 1 << 4, "mpx"),
    (1 << 5 | 1 << 6 | 1 << 7, "avx512"),
    (1 << 9, "pkru"),
    (1 << 17 | 1 << 18, "amx"),
    (1 << 19, "apx"),
)
