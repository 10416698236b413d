"""The restorer_args parts the restorer and the exe loader fill alike: the arena, signal state, one thread's entry.

Why here and not in restore/: both `restore` (runtime/restore/restorer_args.py)
and `exe` (runtime/convert/exe.py) build a restorer_args block the same
shared steps (pie/common/) read, and those two stages may not import each
other; what either fills the same way lives once, below both.
"""

import ctypes
import os

from runtime.arch import x86_64 as arch
from runtime.images.model import Process, ThreadCore, Vma, VmaAdvice, VmaKind
from runtime.infect import blobs
from runtime.mm import sysv
from runtime.task import posix_timers


# madvise(2) advice numbers (include/uapi/asm-generic/mman-common.h); restorer_vma.advice
# has bit n set for advice n.
MADV_NUMBERS = {
    VmaAdvice.RANDOM: 1,
    VmaAdvice.SEQUENTIAL: 2,
    VmaAdvice.DONTFORK: 10,
    VmaAdvice.MERGEABLE: 12,
    VmaAdvice.HUGEPAGE: 14,
    VmaAdvice.NOHUGEPAGE: 15,
    VmaAdvice.DONTDUMP: 16,
    VmaAdvice.WIPEONFORK: 18,
}


class Arena:
    """The restorer area's bytes after the blob, handed out in order: add(ctype, count) -> (view, address).

    Each part starts 64-byte aligned (an rt_sigframe must be; the rest costs
    a few bytes). Without a buffer the arena only measures: views are
    scratch objects and addresses assume base 0, which is how build_area
    learns the area's size before it can choose where the area goes.
    """

    ALIGNMENT = 64

    def __init__(self, start: int, base: int = 0, buffer: bytearray | None = None):
        self.base = base
        self.end = start
        self.buffer = buffer

    def add(self, ctype, count: int = 1):
        array_type = ctype * count
        offset = self.end
        self.end = arch.align_up(offset + ctypes.sizeof(array_type), self.ALIGNMENT)
        view = array_type() if self.buffer is None else array_type.from_buffer(self.buffer, offset)
        return view, self.base + offset

    def add_bytes(self, data: bytes) -> int:
        view, address = self.add(ctypes.c_uint8, len(data))
        view[:] = data
        return address


def _siginfo_signo(info: bytes) -> int:
    return int.from_bytes(info[:4], "little", signed=True)


def fill_signals(arena: Arena, args, process: Process) -> None:
    """The process's signal state: actions, interval and POSIX timers, and the signals pending on it as a whole."""
    for slot, timer in zip(args.itimers, process.itimers):
        slot.interval_sec, slot.interval_usec = timer.interval_sec, timer.interval_usec
        slot.value_sec, slot.value_usec = timer.value_sec, timer.value_usec
    for slot, action in zip(args.sigactions, process.sigactions):
        slot.handler, slot.flags, slot.restorer, slot.mask = action.handler, action.flags, action.restorer, action.mask
    pending = _queued_again(process.shared_pending, process)
    args.nr_pending = len(pending)
    args.pending = _add_siginfos(arena, blobs.protocol().RestorerSiginfo, pending)
    _fill_posix_timers(arena, args, process)


def _fill_posix_timers(arena: Arena, args, process: Process) -> None:
    slots, args.posix_timers = arena.add(blobs.protocol().RestorerPosixTimer, len(process.posix_timers))
    args.nr_posix_timers = len(process.posix_timers)
    for slot, timer in zip(slots, process.posix_timers):
        slot.id, slot.clock, slot.signo, slot.notify, slot.tid = (timer.id, timer.clock, timer.signal, timer.notify,
                                                                  timer.tid)
        slot.value = timer.sigev_value
        slot.spec.interval_sec, slot.spec.interval_nsec = timer.interval_sec, timer.interval_nsec
        slot.spec.value_sec, slot.spec.value_nsec = timer.value_sec, timer.value_nsec


def _queued_again(infos: tuple[bytes, ...], process: Process) -> tuple[bytes, ...]:
    """The pending signals the restorer queues: all but the periodic timers' own, which they queue themselves."""
    return tuple(info for info in infos if not posix_timers.refired_by_timer(info, process.posix_timers))


def _add_siginfos(arena: Arena, siginfo_type, infos: tuple[bytes, ...]) -> int:
    slots, address = arena.add(siginfo_type, len(infos))
    for slot, info in zip(slots, infos):
        slot.signo = _siginfo_signo(info)
        ctypes.memmove(slot.info, info, len(info))
    return address


def fill_thread(arena: Arena, slot, process: Process, thread: ThreadCore, xstate: bytes) -> None:
    """One dumped thread's restorer_thread: its own state, its pending signals and the rt_sigframe it returns
    through (built here, from the saved registers, xstate and mask)."""
    proto = blobs.protocol()
    slot.tid = thread.tid
    slot.ss_sp, slot.ss_flags, slot.ss_size = thread.altstack.sp, thread.altstack.flags, thread.altstack.size
    if thread.rseq is not None:
        slot.rseq_addr, slot.rseq_len, slot.rseq_sig = thread.rseq.address, thread.rseq.size, thread.rseq.signature
    # rt_sigreturn does not touch the segment bases: the TLS pointer is set by the restorer.
    slot.fs_base, slot.gs_base = thread.regs.fs_base, thread.regs.gs_base
    slot.clear_child_tid = thread.clear_child_tid
    slot.robust_list, slot.robust_list_len = thread.robust_list, thread.robust_list_len
    fill_name(slot, thread.comm or process.comm)
    pending = _queued_again(thread.pending, process)
    slot.nr_pending = len(pending)
    slot.pending = _add_siginfos(arena, proto.RestorerSiginfo, pending)
    frame_view, frame_address = arena.add(ctypes.c_uint8, arch.rt_sigframe_size(len(xstate)))
    frame, slot.sigreturn_sp = arch.build_rt_sigframe(thread.regs, xstate, thread.blocked, frame_address)
    frame_view[:len(frame)] = frame


def fill_name(slot, name: str) -> None:
    """The kernel keeps TASK_COMM_LEN - 1 bytes of a name; the slot is zero-filled, so it ends in NUL."""
    encoded = os.fsencode(name)[:len(slot.comm) - 1]
    slot.comm[:len(encoded)] = list(encoded)


def fill_vma(slot, v: Vma, fd: int) -> None:
    """One restorer_vma: mmap(start, size, prot, flags, fd, offset), or a SysV attach; fd -1 for anonymous memory."""
    slot.start, slot.end, slot.prot = v.start, v.end, v.prot
    slot.flags = (arch.MAP_SHARED if v.shared else arch.MAP_PRIVATE) | (arch.MAP_GROWSDOWN if v.growsdown else 0)
    slot.shmid, slot.shmflg = -1, 0
    if v.kind is VmaKind.SYSV:
        slot.fd, slot.offset, slot.shmid = -1, v.offset, v.shmem
        slot.shmflg = sysv.SHM_RDONLY if v.sysv_readonly else 0
    elif fd >= 0:
        slot.fd, slot.offset = fd, v.offset
    else:
        slot.fd, slot.offset = -1, 0
        slot.flags |= arch.MAP_ANONYMOUS
    slot.advice = sum(1 << MADV_NUMBERS[advice] for advice in v.advice)


def fill_mm(arena: Arena, args, process: Process, exe_fd: int) -> None:
    """prctl_mm_map for set_mm_map, the auxv it points to copied into the area; exe_fd: the exe link's new
    file, or U32 -1 to keep the link (which needs no privilege)."""
    mm = process.mm
    for name in ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                 "arg_start", "arg_end", "env_start", "env_end"):
        setattr(args.mm, name, getattr(mm, name))
    auxv, args.mm.auxv = arena.add(ctypes.c_uint64, len(mm.auxv))
    auxv[:] = list(mm.auxv)
    args.mm.auxv_size, args.mm.exe_fd = ctypes.sizeof(auxv), exe_fd
