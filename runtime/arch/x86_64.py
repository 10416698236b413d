"""Everything x86_64-specific: registers, syscall numbers, restart codes, xstate, rt_sigframe.

Why one module: the kernel's register layout, its syscall numbers, the way
an interrupted syscall is restarted and the signal frame rt_sigreturn reads
are all architecture facts. Keeping them here means a second architecture
is a new file, and the infection (which builds a frame so the parasite can
return to the task's own context) and the restore (whose restorer returns
into the dumped context the same way) share one frame builder.
"""

import ctypes
import struct
from dataclasses import dataclass


class UserRegs(ctypes.Structure):
    """struct user_regs_struct (arch/x86/include/asm/user_64.h), as PTRACE_GETREGS fills it.

    Declared here rather than taken from python-ptrace: importing its bindings runs `ldconfig -p` (its
    find_library("c")), tens of milliseconds of every command (issue 18).
    """

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


NT_PRSTATUS = 1
NT_X86_XSTATE = 0x202

# Syscall numbers the runtime injects or recognises (arch/x86/entry/syscalls/syscall_64.tbl).
NR_CLOSE = 3
NR_MMAP = 9
NR_MUNMAP = 11
NR_RT_SIGRETURN = 15
NR_NANOSLEEP = 35
NR_EXIT = 60
NR_GETPID = 39
NR_FTRUNCATE = 77
NR_SETGROUPS = 116
NR_SETRESUID = 117
NR_SETRESGID = 119
NR_SETFSUID = 122
NR_SETFSGID = 123
NR_PRCTL = 157
NR_ARCH_PRCTL = 158
NR_RESTART_SYSCALL = 219
NR_IOPRIO_SET = 251
NR_IOPRIO_GET = 252
NR_GET_ROBUST_LIST = 274
NR_KCMP = 312
NR_SCHED_SETATTR = 314
NR_SCHED_GETATTR = 315
NR_RSEQ = 334
NR_MEMFD_CREATE = 319

# mmap flags (include/uapi/asm-generic/mman-common.h, mman.h) the restore passes on.
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100
MAP_FIXED_NOREPLACE = 0x100000

SYSCALL_INSN = b"\x0f\x05"
SYSCALL_INSN_LEN = len(SYSCALL_INSN)
# `mov $15, %eax; syscall` and `mov $15, %rax; syscall`: the rt_sigreturn every libc's
# signal restorer (__restore_rt) consists of, found in nearly every process's code.
SIGRETURN_SEQUENCES = (b"\xb8\x0f\x00\x00\x00\x0f\x05", b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05")
SYSCALL_RET_INSNS = b"\x0f\x05\xc3"  # `syscall; ret`
RED_ZONE = 128  # bytes below rsp that leaf code may use; the kernel's signal frames go below it
EFLAGS_TF = 0x100  # single-step
EFLAGS_DF = 0x400  # string direction: the ABI wants it clear on function entry

# Values a syscall interrupted by a signal leaves in rax (include/linux/errno.h);
# the kernel turns them into a restart or -EINTR when it returns to user mode.
ERESTARTSYS = 512
ERESTARTNOINTR = 513
ERESTARTNOHAND = 514
ERESTART_RESTARTBLOCK = 516
RESTART_CODES = (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND)

# A register or word is 64 bits: negative values are stored as their two's complement.
U64_MAX = (1 << 64) - 1
# The sigset the kernel uses on x86_64 is 64 bits; SIGKILL/SIGSTOP bits are ignored by it.
SIGSET_ALL = U64_MAX
# orig_rax -1: the task is not in a syscall, so the kernel restarts none on its way back.
NO_SYSCALL = U64_MAX

# struct _fpx_sw_bytes magic values and uc_flags (arch/x86/include/uapi/asm/sigcontext.h, ucontext.h).
FP_XSTATE_MAGIC1 = 0x46505853
FP_XSTATE_MAGIC2 = 0x46505845
FP_XSTATE_MAGIC2_SIZE = 4
FXSAVE_SW_BYTES_OFFSET = 464  # sw_reserved inside the 512-byte legacy fxsave area
XSAVE_HEADER_OFFSET = 512
UC_FP_XSTATE = 0x1
UC_SIGCONTEXT_SS = 0x2
UC_STRICT_RESTORE_SS = 0x4
XSTATE_ALIGN = 64
XSTATE_PROBE_SIZE = 64 * 1024  # larger than any xsave area; the kernel shrinks the iovec

SIGINFO_SIZE = 128
# rt_sigframe: pretcode (8) + ucontext: uc_flags (8), uc_link (8), uc_stack (24),
# sigcontext (256), uc_sigmask (8) + siginfo (128).
UCONTEXT_OFFSET = 8
SIGCONTEXT_OFFSET = UCONTEXT_OFFSET + 8 + 8 + 24
SIGCONTEXT_SIZE = 256
SIGMASK_OFFSET = SIGCONTEXT_OFFSET + SIGCONTEXT_SIZE
SIGINFO_OFFSET = SIGMASK_OFFSET + 8
RT_SIGFRAME_SIZE = SIGINFO_OFFSET + SIGINFO_SIZE

_SIGCONTEXT_GPRS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                    "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "eflags")


def signed(value: int) -> int:
    """A register's 64-bit value as the signed long the kernel compares."""
    return ctypes.c_long(value).value


def copy_regs(regs: UserRegs) -> UserRegs:
    return UserRegs.from_buffer_copy(regs)


def set_syscall_args(regs: UserRegs, nr: int, args: tuple[int, ...]) -> None:
    """Load nr and up to six arguments the way the syscall instruction expects them."""
    if len(args) > 6:
        raise ValueError(f"syscall {nr}: at most 6 arguments, got {len(args)}")
    regs.rax = nr
    for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
        setattr(regs, name, value & U64_MAX)


def syscall_result(regs: UserRegs) -> int:
    return signed(regs.rax)


def resume_registers(regs: UserRegs) -> UserRegs:
    """The registers the task must resume with if it returns by rt_sigreturn.

    A task stopped inside a syscall shows rax = -ERESTART* and rip just after
    the syscall instruction; the kernel would restart it when returning to
    user mode without a handler. rt_sigreturn does not do that, so the frame
    must already hold the restart: back up over the instruction and reload
    the number (restart_syscall for a RESTARTBLOCK syscall).
    """
    resume = copy_regs(regs)
    if signed(regs.orig_rax) < 0:
        return resume
    code = -signed(regs.rax)
    if code in RESTART_CODES:
        resume.rax = regs.orig_rax
        resume.rip = regs.rip - SYSCALL_INSN_LEN
    elif code == ERESTART_RESTARTBLOCK:
        resume.rax = NR_RESTART_SYSCALL
        resume.rip = regs.rip - SYSCALL_INSN_LEN
    return resume


@dataclass(frozen=True)
class XstateInfo:
    """What the xsave area's software-reserved bytes say about this CPU and kernel."""

    size: int  # bytes of the user (non-compacted) xsave area
    features: int  # XCR0 as the kernel exposes it (the xfeatures present)


def xstate_info(xstate: bytes) -> XstateInfo:
    """What a PTRACE_GETREGSET NT_X86_XSTATE buffer says: its size, and XCR0.

    The kernel exports XCR0 in the first word of the fxsave area's
    sw_reserved bytes of the ptrace copy (USER_XSTATE_XCR0_WORD); the
    signal frame's fx_sw_bytes live at the same place, so the frame builder
    overwrites that word.
    """
    (features,) = struct.unpack_from("<Q", xstate, FXSAVE_SW_BYTES_OFFSET)
    return XstateInfo(size=len(xstate), features=features)


def align_up(value: int, alignment: int) -> int:
    """value rounded up to a multiple of alignment (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def rt_sigframe_size(xstate_size: int | None) -> int:
    """Bytes build_rt_sigframe needs from a 64-byte aligned frame address."""
    if xstate_size is None:
        return RT_SIGFRAME_SIZE
    return align_up(RT_SIGFRAME_SIZE, XSTATE_ALIGN) + xstate_size + FP_XSTATE_MAGIC2_SIZE


def build_rt_sigframe(regs, xstate: bytes | None, sigmask: int, frame_addr: int) -> tuple[bytes, int]:
    """An rt_sigframe at frame_addr that rt_sigreturn turns back into regs, xstate and sigmask.

    regs: anything with user_regs_struct's attribute names (UserRegs or the
    checkpoint model's Registers). Returns the frame bytes (to be written at
    frame_addr) and the rsp rt_sigreturn must be entered with: the kernel
    finds the frame at rsp - 8, where a handler's `ret` popped pretcode.
    """
    if frame_addr % XSTATE_ALIGN:
        raise ValueError(f"rt_sigframe address {frame_addr:#x} is not {XSTATE_ALIGN}-byte aligned")
    frame = bytearray(rt_sigframe_size(None if xstate is None else len(xstate)))
    fpstate_addr = 0
    uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
    if xstate is not None:
        fp_off = align_up(RT_SIGFRAME_SIZE, XSTATE_ALIGN)
        fpstate_addr = frame_addr + fp_off
        frame[fp_off:fp_off + len(xstate)] = xstate
        features = xstate_info(xstate).features
        # fx_sw_bytes tell rt_sigreturn the area is a full xsave image and how large it is;
        # magic2 right after it proves the size.
        struct.pack_into("<IIQI", frame, fp_off + FXSAVE_SW_BYTES_OFFSET,
                         FP_XSTATE_MAGIC1, len(xstate) + FP_XSTATE_MAGIC2_SIZE, features, len(xstate))
        frame[fp_off + FXSAVE_SW_BYTES_OFFSET + 20:fp_off + XSAVE_HEADER_OFFSET] = bytes(28)
        struct.pack_into("<I", frame, fp_off + len(xstate), FP_XSTATE_MAGIC2)
        uc_flags |= UC_FP_XSTATE
    struct.pack_into("<Q", frame, UCONTEXT_OFFSET, uc_flags)
    struct.pack_into("<18Q", frame, SIGCONTEXT_OFFSET, *(getattr(regs, n) & U64_MAX for n in _SIGCONTEXT_GPRS))
    # cs, gs, fs, ss as u16, then err, trapno, oldmask, cr2, fpstate, reserved[8].
    struct.pack_into("<4H", frame, SIGCONTEXT_OFFSET + 18 * 8, regs.cs & 0xFFFF, regs.gs & 0xFFFF,
                     regs.fs & 0xFFFF, regs.ss & 0xFFFF)
    struct.pack_into("<Q", frame, SIGCONTEXT_OFFSET + 18 * 8 + 8 + 4 * 8, fpstate_addr)
    struct.pack_into("<Q", frame, SIGMASK_OFFSET, sigmask & SIGSET_ALL)
    return bytes(frame), frame_addr + UCONTEXT_OFFSET
