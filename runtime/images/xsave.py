"""An xsave area checked the way rt_sigreturn will check it, before anything is created.

Why: the restored task gets its FPU/SSE/AVX state from the signal frame the
restorer returns through, and the kernel validates that area only then
(validate_user_xstate_header and the MXCSR check in
arch/x86/kernel/fpu/xstate.c and signal.c): an XSTATE_BV with a feature
this CPU lacks, a non-zero XCOMP_BV (user space must use the standard,
uncompacted format, which is what PTRACE_GETREGSET gives), non-zero
reserved header bytes or a reserved MXCSR bit make rt_sigreturn fail, and
the task dies of SIGSEGV after the restore said it succeeded. Checked here,
such an image is refused with a message naming the byte that is wrong.

Layout (Intel SDM vol. 1, 13.4): the 512-byte legacy FXSAVE region (MXCSR
at byte 24, MXCSR_MASK at 28), then the 64-byte xsave header at 512:
XSTATE_BV, XCOMP_BV, 48 reserved bytes.
"""

import struct

from runtime.errors import ImageError
from runtime.images.cpu import describe_xsave_features

MXCSR_OFFSET = 24
HEADER_OFFSET = 512
HEADER_SIZE = 64
# What FXSAVE stores as MXCSR_MASK 0 means: every bit but DAZ (bit 6) is writable
# (SDM vol. 1, 11.6.6); bits 16..31 are reserved on every CPU.
MXCSR_MASK_DEFAULT = 0xFFBF
MXCSR_BITS = 0xFFFF


def check_xsave_area(area: bytes, features: int, file: str) -> None:
    """Refuse an xsave area rt_sigreturn would refuse on a CPU with these user xfeatures (XCR0)."""
    if len(area) < HEADER_OFFSET + HEADER_SIZE:
        raise ImageError(file, "", f"{len(area)} bytes is shorter than the legacy area and xsave header")
    xstate_bv, xcomp_bv = struct.unpack_from("<QQ", area, HEADER_OFFSET)
    if xstate_bv & ~features:
        extra = xstate_bv & ~features
        raise ImageError(file, "XSTATE_BV", f"{xstate_bv:#x} has features {extra:#x} "
                                            f"({describe_xsave_features(extra)}) this CPU does not have")
    if xcomp_bv:
        raise ImageError(file, "XCOMP_BV", f"{xcomp_bv:#x}: a restore takes only the standard (uncompacted) "
                                           "format, XCOMP_BV 0")
    reserved = area[HEADER_OFFSET + 16:HEADER_OFFSET + HEADER_SIZE]
    if any(reserved):
        first = next(i for i, byte in enumerate(reserved) if byte)
        raise ImageError(file, "xsave header", f"reserved byte {HEADER_OFFSET + 16 + first} is not zero")
    mxcsr, mxcsr_mask = struct.unpack_from("<II", area, MXCSR_OFFSET)
    writable = (mxcsr_mask or MXCSR_MASK_DEFAULT) & MXCSR_BITS
    if mxcsr & ~writable:
        raise ImageError(file, "MXCSR", f"{mxcsr:#x} sets reserved bits {mxcsr & ~writable:#x}")
