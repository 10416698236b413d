"""Restartable sequences: a thread's rseq state at dump, its fix-up, its write-back at restore.

Why one module: the kernel's rseq contract (include/uapi/linux/rseq.h and
kernel/rseq.c) decides three things the dump and the restore must agree on,
and they are easy to get subtly wrong when spread out.

1. When. The kernel acts on a thread's rseq state only when it returns to
   user mode after a preemption, migration or signal: it reads
   `(struct rseq).rseq_cs`, validates the descriptor it points to, and
   either clears `rseq_cs` (IP outside the section) or moves IP to the
   descriptor's abort_ip. A thread stopped by ptrace has been scheduled out
   but has not yet returned, so its IP and `rseq_cs` are still as the
   thread left them. The first return to user mode after that (the
   parasite starting) clears `rseq_cs`, so the state must be read with
   ptrace peeks before the parasite runs.

2. What. A thread whose IP is inside `[start_ip, start_ip +
   post_commit_offset)` would be restarted by the kernel: its IP goes to
   abort_ip (ABORT). The same is done here, to the live thread as well as
   to the image, so a dump with --leave-running cannot let the thread
   commit a section it was preempted in (the parasite's return to user mode
   would otherwise have cleared `rseq_cs` without the abort). A section
   whose descriptor, or whose area, says RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL
   asked not to be restarted by a signal, which is what the dump and the
   restore are to the thread (both end in rt_sigreturn): IP is kept and the
   `rseq_cs` value saved (NO_RESTART), to be written back into the restored
   thread's area while it is still stopped, before it runs its own code.

3. Which kernel. Since Linux 6.0 the NO_RESTART flags are deprecated: a
   thread found inside a section with any of them set is killed with
   SIGSEGV on its next return to user mode after a preemption, migration
   or signal. Images may come from an older kernel, so they are recorded
   and restored faithfully, and `show`/restore say that this kernel will
   not honour them.

The descriptor is validated exactly as the kernel validates it (bounds,
version, overflow, abort_ip outside the section, the signature word at
abort_ip - 4): a descriptor the kernel would reject means the kernel kills
the thread with SIGSEGV on its next return to user mode, so such a thread
is refused rather than dumped.
"""

import ctypes
import enum
import errno
import logging
import os
import re
import struct
from dataclasses import dataclass

from runtime.arch import x86_64 as arch
from runtime.errors import DumpError, PtraceError, RestoreError
from runtime.images.model import TASK_SIZE, Process, Rseq, RseqCase, RseqCs
from runtime.kernel import ptrace
from runtime.kernel.libc import libc

log = logging.getLogger(__name__)


class RseqCsFlag(enum.IntFlag):
    """enum rseq_cs_flags: used in struct rseq_cs.flags and in struct rseq.flags alike."""

    NO_RESTART_ON_PREEMPT = 1
    NO_RESTART_ON_SIGNAL = 2
    NO_RESTART_ON_MIGRATE = 4


NO_RESTART_FLAGS = RseqCsFlag.NO_RESTART_ON_PREEMPT | RseqCsFlag.NO_RESTART_ON_SIGNAL | RseqCsFlag.NO_RESTART_ON_MIGRATE

# struct rseq (uapi linux/rseq.h): u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; u32 flags;
# then (Linux 6.3+) u32 node_id; u32 mm_cid; aligned 32. The original ABI size is 32.
RSEQ_CPU_ID_START_OFFSET = 0
RSEQ_CPU_ID_OFFSET = 4
RSEQ_CS_OFFSET = 8
RSEQ_FLAGS_OFFSET = 16
RSEQ_ORIG_SIZE = 32

# struct rseq_cs: u32 version; u32 flags; u64 start_ip; u64 post_commit_offset; u64 abort_ip; aligned 32.
RSEQ_CS_LAYOUT = struct.Struct("<IIQQQ")
RSEQ_CS_VERSION = 0
RSEQ_SIG_SIZE = 4  # the signature word sits just before abort_ip

RSEQ_FLAG_UNREGISTER = 1

# Linux 6.0 made the NO_RESTART flags fatal (kernel/rseq.c, rseq_warn_flags).
NO_RESTART_HONOURED_BEFORE = (6, 0)

_WORD = 8
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class RseqFixup:
    """The outcome of classifying a stopped thread: its rseq record and the registers it must resume with."""

    rseq: Rseq | None  # None: the thread has no rseq area registered
    regs: arch.UserRegs  # the registers to save in the image (IP moved to abort_ip for ABORT)
    changed: bool  # regs differ from the thread's live registers


def peek_bytes(tid: int, addr: int, size: int) -> bytes:
    """size bytes at addr of a stopped tracee, by aligned PTRACE_PEEKDATA words.

    Aligned words never cross a page, so a read that ends at the last byte
    of a mapping does not fault on the next page as an unaligned word would.
    """
    first = addr & ~(_WORD - 1)
    words = [ptrace.peek_data(tid, a) & _U64 for a in range(first, addr + size, _WORD)]
    data = b"".join(struct.pack("<Q", w) for w in words)
    return data[addr - first:addr - first + size]


def poke_u64(tid: int, addr: int, value: int) -> None:
    """Write one naturally aligned u64 (rseq_cs is aligned 8 in an area aligned 32)."""
    ptrace.poke_data(tid, addr, value)


def read_u64(tid: int, addr: int) -> int:
    return struct.unpack("<Q", peek_bytes(tid, addr, 8))[0]


def read_u32(tid: int, addr: int) -> int:
    return struct.unpack("<I", peek_bytes(tid, addr, 4))[0]


def read_configuration(tid: int) -> ptrace.RseqConfiguration | None:
    """The thread's registration; None if it has none (address 0)."""
    conf = ptrace.get_rseq_configuration(tid)
    return conf if conf.address else None


def read_descriptor(tid: int, addr: int) -> RseqCs:
    version, flags, start_ip, post_commit_offset, abort_ip = RSEQ_CS_LAYOUT.unpack(
        peek_bytes(tid, addr, RSEQ_CS_LAYOUT.size))
    return RseqCs(version, flags, start_ip, post_commit_offset, abort_ip)


def descriptor_problem(tid: int, cs: RseqCs, signature: int) -> str | None:
    """Why the kernel would reject this descriptor (kernel/rseq.c, rseq_get_rseq_cs), or None.

    The checks are the kernel's, in its order; the kernel answers any of
    them with SIGSEGV to the thread.
    """
    if cs.start_ip >= TASK_SIZE or cs.start_ip + cs.post_commit_offset >= TASK_SIZE or cs.abort_ip >= TASK_SIZE:
        return "start_ip, start_ip + post_commit_offset or abort_ip is not a user address"
    if cs.version > RSEQ_CS_VERSION:
        return f"version {cs.version} is not {RSEQ_CS_VERSION}"
    if (cs.abort_ip - cs.start_ip) & _U64 < cs.post_commit_offset:
        return f"abort_ip {cs.abort_ip:#x} is inside the critical section"
    try:
        word = read_u32(tid, cs.abort_ip - RSEQ_SIG_SIZE)
    except PtraceError as exc:
        return f"the signature word at {cs.abort_ip - RSEQ_SIG_SIZE:#x} is unreadable ({os.strerror(exc.errno)})"
    if word != signature:
        return f"signature word {word:#010x} at abort_ip - 4 is not the registered {signature:#010x}"
    return None


def in_critical_section(ip: int, cs: RseqCs) -> bool:
    """The kernel's in_rseq_cs(): unsigned ip - start_ip < post_commit_offset."""
    return (ip - cs.start_ip) & _U64 < cs.post_commit_offset


def classify(tid: int, regs: arch.UserRegs) -> RseqFixup:
    """Read a ptrace-stopped thread's rseq state and decide its case; reads only, changes nothing.

    regs are the thread's registers as PTRACE_GETREGS gave them. The IP the
    kernel tests is the one after its own syscall-restart adjustment (it
    handles the restart before it looks at rseq on the way back to user
    mode), so the test is made on arch.resume_registers(regs).
    """
    conf = read_configuration(tid)
    if conf is None:
        return RseqFixup(None, arch.copy_regs(regs), False)
    base = Rseq(conf.address, conf.size, conf.signature)
    rseq_cs = read_u64(tid, conf.address + RSEQ_CS_OFFSET)
    if rseq_cs == 0:
        return RseqFixup(base, arch.copy_regs(regs), False)
    if rseq_cs >= TASK_SIZE:
        raise DumpError(tid, f"rseq_cs {rseq_cs:#x} in the rseq area at {conf.address:#x} is not a user address "
                             "(the kernel would kill the thread with SIGSEGV)")
    try:
        cs = read_descriptor(tid, rseq_cs)
    except PtraceError as exc:
        raise DumpError(tid, f"rseq descriptor at {rseq_cs:#x} is unreadable ({os.strerror(exc.errno)}): "
                             "the kernel would kill the thread with SIGSEGV") from exc
    problem = descriptor_problem(tid, cs, conf.signature)
    if problem is not None:
        raise DumpError(tid, f"rseq descriptor at {rseq_cs:#x}: {problem} "
                             "(the kernel would kill the thread with SIGSEGV)")
    resume = arch.resume_registers(regs)
    if not in_critical_section(resume.rip, cs):
        return RseqFixup(Rseq(conf.address, conf.size, conf.signature, RseqCase.OUTSIDE, rseq_cs, cs),
                         arch.copy_regs(regs), False)
    area_flags = read_u32(tid, conf.address + RSEQ_FLAGS_OFFSET)
    unknown = (cs.flags | area_flags) & ~NO_RESTART_FLAGS
    if unknown:
        raise DumpError(tid, f"rseq flags {unknown:#x} unknown to every kernel "
                             f"(descriptor {cs.flags:#x}, area {area_flags:#x})")
    if (cs.flags | area_flags) & RseqCsFlag.NO_RESTART_ON_SIGNAL:
        return RseqFixup(Rseq(conf.address, conf.size, conf.signature, RseqCase.NO_RESTART, rseq_cs, cs),
                         arch.copy_regs(regs), False)
    # The kernel's own restart: IP to the abort handler, no syscall restart
    # after it (orig_rax -1), rseq_cs cleared.
    resume.rip = cs.abort_ip
    resume.orig_rax = _U64
    return RseqFixup(Rseq(conf.address, conf.size, conf.signature, RseqCase.ABORT, rseq_cs, cs), resume, True)


def fix_up_thread(tid: int) -> RseqFixup:
    """Classify a ptrace-stopped thread and, for ABORT, do to it what the kernel would do.

    Called before the parasite runs. For ABORT the live thread's IP moves to
    abort_ip and its rseq_cs is cleared, exactly the kernel's restart, so the
    registers the infection saves (and the dumped ones) are the aborted ones,
    and a thread left running after the dump cannot commit the section it
    was interrupted in.
    """
    fixup = classify(tid, ptrace.get_regs(tid))
    if fixup.changed:
        poke_u64(tid, fixup.rseq.address + RSEQ_CS_OFFSET, 0)
        ptrace.set_regs(tid, fixup.regs)
    return fixup


def write_back(tid: int, rseq: Rseq | None) -> None:
    """At restore, on the restored thread stopped before it runs its own code.

    Checks that the restorer registered the dumped area (address, length,
    signature) and, for NO_RESTART, puts the saved rseq_cs back, so the
    kernel finds the thread inside its critical section as it was.
    """
    if rseq is None:
        return
    try:
        conf = ptrace.get_rseq_configuration(tid)
    except PtraceError as exc:
        raise RestoreError(tid, f"cannot read the restored rseq registration: {exc}") from exc
    if (conf.address, conf.size, conf.signature) != (rseq.address, rseq.size, rseq.signature):
        raise RestoreError(tid, f"rseq registered as {conf.address:#x}+{conf.size} sig {conf.signature:#010x}, "
                                f"the image has {rseq.address:#x}+{rseq.size} sig {rseq.signature:#010x}")
    if rseq.case is RseqCase.NO_RESTART:
        try:
            poke_u64(tid, rseq.address + RSEQ_CS_OFFSET, rseq.rseq_cs)
        except PtraceError as exc:
            raise RestoreError(tid, f"cannot write rseq_cs back into the area at {rseq.address:#x}: {exc}") from exc
        warning = no_restart_warning(rseq)
        if warning:
            log.warning("thread %d: %s", tid, warning)


def check_kernel_supports(process: Process) -> None:
    """Refuse, before anything is forked, an image with rseq areas on a kernel without rseq(2)."""
    registered = [thread.tid for thread in process.threads if thread.rseq is not None]
    if registered and not kernel_has_rseq():
        raise RestoreError(process.pid, f"threads {registered} have rseq areas and this kernel has no rseq(2)")


def kernel_has_rseq() -> bool:
    """Whether the running kernel implements rseq(2).

    Asked with flags the kernel rejects (EINVAL) before it looks at
    anything else, so the caller's own registration is untouched; a kernel
    without rseq answers ENOSYS.
    """
    result = libc.syscall(ctypes.c_long(arch.NR_RSEQ), ctypes.c_void_p(0), ctypes.c_uint32(0),
                          ctypes.c_int(~RSEQ_FLAG_UNREGISTER), ctypes.c_uint32(0))
    return not (result == -1 and ctypes.get_errno() == errno.ENOSYS)


def kernel_honours_no_restart(release: str | None = None) -> bool:
    """Linux < 6.0 honours RSEQ_CS_FLAG_NO_RESTART_*; 6.0 and later kill the thread instead."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    if match is None:
        return False
    return (int(match[1]), int(match[2])) < NO_RESTART_HONOURED_BEFORE


def no_restart_warning(rseq: Rseq | None, release: str | None = None) -> str | None:
    """What restore and show say about a NO_RESTART thread on this kernel, or None."""
    if rseq is None or rseq.case is not RseqCase.NO_RESTART or kernel_honours_no_restart(release):
        return None
    kernel = release if release is not None else os.uname().release
    return (f"kernel {kernel} does not honour RSEQ_CS_FLAG_NO_RESTART_* (deprecated since Linux 6.0): "
            "the thread is killed with SIGSEGV when it next returns to user mode inside the section "
            "after a preemption, migration or signal")


def describe(rseq: Rseq | None) -> list[str]:
    """Lines for `show`: the registration, the state at dump and the rule that was applied."""
    if rseq is None:
        return ["rseq: not registered"]
    lines = [f"rseq: area {rseq.address:#x} size {rseq.size} signature {rseq.signature:#010x}"]
    if rseq.cs is None:
        lines.append("  rseq_cs 0 at dump: no critical section active; case outside")
        return lines
    cs = rseq.cs
    end = cs.start_ip + cs.post_commit_offset
    flags = RseqCsFlag(cs.flags & NO_RESTART_FLAGS)
    lines.append(f"  rseq_cs {rseq.rseq_cs:#x}: section [{cs.start_ip:#x}, {end:#x}) abort {cs.abort_ip:#x} "
                 f"flags {cs.flags:#x}{' (' + str(flags.name) + ')' if cs.flags else ''} version {cs.version}")
    if rseq.case is RseqCase.OUTSIDE:
        lines.append("  case outside: IP was not in the section; the kernel clears rseq_cs")
    elif rseq.case is RseqCase.ABORT:
        lines.append(f"  case abort: IP was in the section; moved to the abort handler {cs.abort_ip:#x}")
    else:
        lines.append(f"  case no_restart: IP kept in the section; rseq_cs {rseq.rseq_cs:#x} written back after restore")
        warning = no_restart_warning(rseq)
        if warning:
            lines.append(f"  warning: {warning}")
    return lines
