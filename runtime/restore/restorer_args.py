"""The restorer area: where it goes, and the bytes that fill it (blob, argument block, signal frame).

Why built in the parent, whole: the restoring child is a copy of this
Python process that should do as little as possible before it enters the
restorer, so everything the restorer reads is computed here, before the
fork, from the checkpoint, as one bytes object the child copies into place.
Descriptor numbers the restorer uses are decided here too (HelperFds): the
child opens each file and moves it to its planned number.

The area must be free in the target's layout (it is still mapped while the
target's VMAs are created) and in the restoring process (it is mapped there
first); the running [vdso]/[vvar]/[vvar_vclock] stay where they are until
the restorer moves them, so they are kept too.

Layout: [restorer image + bss (its stack) | restorer_args | arrays the args
point to | rt_sigframe, 64-byte aligned].
"""

import ctypes
import mmap
import os
import resource
from dataclasses import dataclass, field

from runtime import faults
from runtime.arch import x86_64 as arch
from runtime.errors import RestoreError
from runtime.infect import blobs
from runtime.images.model import (KERNEL_MAPPING_KINDS, PAGE_SIZE, TASK_SIZE, Creds, Process, Vma, VmaAdvice,
                                  VmaKind)
from runtime.kernel.procfs.maps import read_mappings
from runtime.mm.vdso import VdsoPlan

# Below 4 GiB sit non-PIE executables and their brk heaps; above the gaps
# near TASK_SIZE the kernel places mmaps and the stack. Prefer the first gap
# from here on: far from both, so the child's own allocations do not land there.
AREA_PREFERRED_START = 1 << 32
MMAP_MIN_ADDR = 0x10000

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100

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

O_RDONLY = os.O_RDONLY
O_RDWR = os.O_RDWR

CAP_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"


@dataclass(frozen=True)
class Range:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class MappedFile:
    """A file some VMA maps, opened once with the access its mappings need."""

    path: str
    flags: int  # O_RDONLY or O_RDWR
    fd: int  # the number the child gives it


@dataclass(frozen=True)
class HelperFds:
    """Descriptor numbers the child opens for the restorer, above every number in use."""

    err: int
    pages: int
    exe: int
    files: tuple[MappedFile, ...] = ()

    @property
    def all(self) -> tuple[int, ...]:
        return (self.err, self.pages, self.exe) + tuple(f.fd for f in self.files)

    def fd_for(self, vma: Vma) -> int:
        wanted = _file_flags(vma)
        return next(f.fd for f in self.files if f.path == vma.path and f.flags == wanted)


@dataclass(frozen=True)
class Area:
    """The restorer area, ready to be copied to base in the child."""

    base: int
    image: bytes
    entry: int  # address of restorer_entry
    args: int  # address of restorer_args
    vdso_temp: Range
    keep: tuple[Range, ...] = field(default=())

    @property
    def size(self) -> int:
        return len(self.image)


def _file_flags(vma: Vma) -> int:
    # A shared writable mapping needs the file open for writing; a private one never does.
    return O_RDWR if vma.shared and vma.prot & mmap.PROT_WRITE else O_RDONLY


def plan_fds(process: Process, inherited: list[int]) -> HelperFds:
    """Helper descriptor numbers above every target fd and every fd this process has open now."""
    first = max([fd.fd for fd in process.fds] + inherited + [2]) + 1
    files: list[MappedFile] = []
    seen: set[tuple[str, int]] = set()
    for vma in process.vmas:
        if vma.kind is VmaKind.FILE and (vma.path, _file_flags(vma)) not in seen:
            seen.add((vma.path, _file_flags(vma)))
            files.append(MappedFile(vma.path, _file_flags(vma), first + 3 + len(files)))
    helpers = HelperFds(err=first, pages=first + 1, exe=first + 2, files=tuple(files))
    # The child opens every number with the runtime's RLIMIT_NOFILE (it sets the image's later):
    # dup2 to a number at or above it fails, so such an image is refused before the fork.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if max(helpers.all) >= limit:
        highest = max(fd.fd for fd in process.fds) if process.fds else 0
        raise RestoreError(process.pid, f"descriptor numbers up to {max(helpers.all)} are needed (the image's "
                                        f"highest is {highest}), but this restore's RLIMIT_NOFILE is {limit}")
    return helpers


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _find_gap(busy: list[Range], size: int, exclude: tuple[Range, ...] = ()) -> Range:
    ranges = sorted(busy + list(exclude), key=lambda r: r.start)
    candidates = []
    cursor = MMAP_MIN_ADDR
    for r in ranges + [Range(TASK_SIZE, TASK_SIZE)]:
        if r.start - cursor >= size:
            candidates.append(Range(cursor, r.start))
        cursor = max(cursor, r.end)
    for gap in candidates:
        start = max(gap.start, AREA_PREFERRED_START)
        if start + size <= gap.end:
            return Range(start, start + size)
    if not candidates:
        raise RestoreError("restore", f"no free range of {size} bytes for the restorer in the target's layout")
    return Range(candidates[0].start, candidates[0].start + size)


def _own_layout() -> list[Range]:
    return [Range(m.start, m.end) for m in read_mappings(os.getpid())]


def _siginfo_signo(info: bytes) -> int:
    return int.from_bytes(info[:4], "little", signed=True)


def target_ranges(process: Process) -> list[Range]:
    """The target's layout, and the guard pages below a stack that grows down: nothing else goes there."""
    target = [Range(v.start, v.end) for v in process.vmas]
    target += [Range(max(v.start - 256 * PAGE_SIZE, 0), v.start) for v in process.vmas if v.growsdown]
    return target


def build_area(process: Process, xstate: bytes, fds: HelperFds, vdso: VdsoPlan | None, log_fd: int = -1) -> Area:
    """Choose the restorer area's address and fill it: blob, restorer_args, arrays, rt_sigframe, vDSO proxy."""
    blob = blobs.load("restorer")
    proto = blobs.protocol()
    thread = process.threads[0]
    target = target_ranges(process)
    running = [Range(start, end) for start, end in vdso.keep] if vdso else []
    if vdso is not None:
        target += [Range(start, end) for start, end in vdso.destinations]
    proxy_image = vdso.proxy.image if vdso is not None and vdso.proxy is not None else b""
    vmas = [v for v in process.vmas if v.kind not in KERNEL_MAPPING_KINDS]
    pending = [(False, info) for info in process.shared_pending] + [(True, info) for info in thread.pending]

    Vmas = proto.RestorerVma * len(vmas)
    Iovs = proto.RestorerIovec * len(process.page_runs)
    Keep = proto.RestorerRange * 4
    Auxv = ctypes.c_uint64 * len(process.mm.auxv)
    Close = ctypes.c_int32 * len(fds.all)
    Pending = proto.RestorerSiginfo * len(pending)
    Proxy = ctypes.c_uint8 * len(proxy_image)
    parts = (proto.RestorerArgs, Keep, Vmas, Iovs, Auxv, Close, Pending, Proxy)
    offsets, cursor = [], blob.memory_size
    for part in parts:
        offsets.append(cursor)
        cursor = _align(cursor + ctypes.sizeof(part), 64)
    frame_offset = cursor
    size = _align(frame_offset + arch.rt_sigframe_size(len(xstate)), PAGE_SIZE)

    own = _own_layout()
    area = _find_gap(target + own, size)
    base = area.start
    keep = sorted([area] + running, key=lambda r: r.start)
    temp = _find_gap(target + own, sum(r.size for r in running), exclude=(area,))

    buffer = bytearray(size)
    blob.place(buffer, base)
    args, keep_arr, vma_arr, iov_arr, auxv_arr, close_arr, pending_arr, proxy_arr = (
        part.from_buffer(buffer, off) for part, off in zip(parts, offsets))
    addr = [base + off for off in offsets]

    args.mode = proto.RESTORER_MODE_RESTORE
    args.log_fd = log_fd
    args.err_fd = fds.err
    args.pages_fd = fds.pages
    args.pid = process.pid
    args.nr_keep = len(keep)
    args.keep = addr[1]
    for slot, r in zip(keep_arr, keep):
        slot.start, slot.end = r.start, r.end

    args.nr_vmas, args.vmas = len(vmas), addr[2]
    for slot, v in zip(vma_arr, vmas):
        slot.start, slot.end, slot.prot = v.start, v.end, v.prot
        slot.flags = (MAP_SHARED if v.shared else MAP_PRIVATE) | (MAP_GROWSDOWN if v.growsdown else 0)
        if v.kind is VmaKind.FILE:
            slot.fd, slot.offset = fds.fd_for(v), v.offset
        else:
            slot.fd, slot.offset = -1, 0
            slot.flags |= MAP_ANONYMOUS
        slot.advice = sum(1 << MADV_NUMBERS[advice] for advice in v.advice)

    args.nr_iovs, args.iovs = len(process.page_runs), addr[3]
    args.pages_offset = process.page_runs[0].offset if process.page_runs else 0
    for slot, run in zip(iov_arr, process.page_runs):
        slot.base, slot.len = run.vaddr, run.size

    mm = process.mm
    for name in ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                 "arg_start", "arg_end", "env_start", "env_end"):
        setattr(args.mm, name, getattr(mm, name))
    auxv_arr[:] = list(mm.auxv)
    args.mm.auxv, args.mm.auxv_size, args.mm.exe_fd = addr[4], ctypes.sizeof(Auxv), fds.exe

    if vdso is not None:
        _fill_vdso_moves(args, vdso, temp)
        args.vdso_proxy.size, args.vdso_proxy.image = len(proxy_image), addr[7]
        args.vdso_proxy.start = vdso.proxy.old_start if vdso.proxy is not None else 0
        proxy_arr[:] = proxy_image

    args.nr_close_fds, args.close_fds = len(fds.all), addr[5]
    close_arr[:] = list(fds.all)

    if thread.rseq is not None:
        args.rseq_addr, args.rseq_len, args.rseq_sig = thread.rseq.address, thread.rseq.size, thread.rseq.signature
    args.ss_sp, args.ss_flags, args.ss_size = thread.altstack.sp, thread.altstack.flags, thread.altstack.size
    for slot, timer in zip(args.itimers, process.itimers):
        slot.interval_sec, slot.interval_usec = timer.interval_sec, timer.interval_usec
        slot.value_sec, slot.value_usec = timer.value_sec, timer.value_usec
    for slot, action in zip(args.sigactions, process.sigactions):
        slot.handler, slot.flags, slot.restorer, slot.mask = action.handler, action.flags, action.restorer, action.mask

    args.nr_pending, args.pending = len(pending), addr[6]
    for slot, (private, info) in zip(pending_arr, pending):
        slot.signo, slot.thread = _siginfo_signo(info), int(private)
        ctypes.memmove(slot.info, info, len(info))

    frame, sigreturn_sp = arch.build_rt_sigframe(thread.regs, xstate, thread.blocked,
                                                 base + frame_offset)
    buffer[frame_offset:frame_offset + len(frame)] = frame
    args.sigreturn_sp = sigreturn_sp
    # rt_sigreturn does not touch the segment bases: the TLS pointer is set by the restorer.
    args.fs_base, args.gs_base = thread.regs.fs_base, thread.regs.gs_base
    args.fail_step = _requested_failure(proto)
    _fill_creds(args.creds, process)
    del args, keep_arr, vma_arr, iov_arr, auxv_arr, close_arr, pending_arr, proxy_arr
    return Area(base, bytes(buffer), base + blob.exports["restorer_entry"], addr[0], temp, tuple(keep))


def _requested_failure(proto) -> int:
    """The restorer_step a test asked to fail (runtime/faults.py), 0 for none."""
    step = faults.restorer_step()
    if step is None:
        return 0
    number = getattr(proto, f"RESTORER_STEP_{step.upper()}", None)
    if number is None:
        raise faults.InjectedFault(f"{faults.RESTORER_PREFIX}{step} (no such restorer step)")
    return number


def describe_advice_failure(detail: int) -> str:
    """The mapping and the advice in the detail of a failed advise_vmas step (start | advice number)."""
    number = detail & (PAGE_SIZE - 1)
    advice = next((a for a, n in MADV_NUMBERS.items() if n == number), None)
    if advice is None:  # no madvise failed: the step was failed on request (runtime/faults.py)
        return f"detail {detail:#x}"
    return f"the kernel refused madvise(MADV_{advice.name}) on the mapping at {detail - number:#x}"


def read_cap_last_cap() -> int:
    with open(CAP_LAST_CAP_PATH) as f:
        return int(f.read())


def _fill_creds(slot, process: Process) -> None:
    """The restorer's last step installs these; what it cannot hold or the kernel cannot set is refused here."""
    creds: Creds = process.creds
    if len(creds.groups) > len(slot.groups):
        raise RestoreError(process.pid, f"creds: {len(creds.groups)} supplementary groups, "
                                        f"the restorer takes at most {len(slot.groups)}")
    last = read_cap_last_cap()
    known = (1 << (last + 1)) - 1
    for name in ("cap_effective", "cap_permitted", "cap_inheritable", "cap_ambient"):
        if getattr(creds, name) & ~known:
            raise RestoreError(process.pid, f"creds: {name} {getattr(creds, name):#x} has capabilities above "
                                            f"this kernel's last, {last}")
        setattr(slot, name, getattr(creds, name))
    # Bounding bits above the last capability mean nothing to this kernel: nothing to drop.
    slot.cap_bounding, slot.cap_last_cap = creds.cap_bounding & known, last
    slot.uid, slot.euid, slot.suid, slot.fsuid = creds.uids
    slot.gid, slot.egid, slot.sgid, slot.fsgid = creds.gids
    slot.nr_groups = len(creds.groups)
    slot.groups[:len(creds.groups)] = list(creds.groups)
    slot.no_new_privs, slot.dumpable = int(creds.no_new_privs), process.dumpable


def _fill_vdso_moves(args, vdso: VdsoPlan, temp: Range) -> None:
    args.nr_vdso_moves = len(vdso.moves)
    args.vdso_temp = temp.start
    for slot, move in zip(args.vdso_moves, vdso.moves):
        slot.old_addr, slot.new_addr, slot.size = move.old_addr, move.new_addr, move.size

