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

Layout: [restorer image + bss (its stack) | restorer_args (the task part) |
the arrays it points to | restorer_thread[] and, per thread, its pending
signals and its rt_sigframe], each part 64-byte aligned, handed out by an
Arena to one filler per concern (_fill_vmas, _fill_threads, ...); then, page
aligned and left out of the image bytes (the mapping is zero-filled), one
restorer stack for each thread but the first, which runs on the blob's.
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
from runtime.images.model import (KERNEL_MAPPING_KINDS, PAGE_SIZE, Creds, Process, ThreadCore, Vma, VmaAdvice,
                                  VmaKind)
from runtime.kernel.procfs.maps import read_mappings
from runtime.mm import sysv
from runtime.mm.address_space import free_gaps
from runtime.mm.vdso import VdsoPlan
from runtime.task import posix_timers

# Below 4 GiB sit non-PIE executables and their brk heaps; above the gaps
# near TASK_SIZE the kernel places mmaps and the stack. Prefer the first gap
# from here on: far from both, so the child's own allocations do not land there.
AREA_PREFERRED_START = 1 << 32


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
SS_DISABLE = 2  # sigaltstack: no alternate stack


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
    """Descriptor numbers the child holds for the restorer and for its own fd table, above every number in use.

    shared: the tree's shared open files this process holds, at the numbers
    their opener gave them (the same in every process, inherited); shmem: the
    shared memory objects it maps, moved to its own numbers.
    """

    err: int
    pages: int
    exe: int
    files: tuple[MappedFile, ...] = ()
    shmem: tuple[tuple[int, int], ...] = ()  # (SharedMemory.id, fd)
    shared: tuple[tuple[int, int], ...] = ()  # (FileEntry.id, fd)

    @property
    def all(self) -> tuple[int, ...]:
        """What the restorer closes last (the shared slots are closed by the child once its fds are in place)."""
        return (self.err, self.pages, self.exe) + tuple(f.fd for f in self.files) + tuple(fd for _, fd in self.shmem)

    @property
    def kept(self) -> tuple[int, ...]:
        """What the child keeps when it closes everything else: all, and the shared slots."""
        return self.all + tuple(fd for _, fd in self.shared)

    def fd_for(self, vma: Vma) -> int:
        if vma.shmem is not None:
            return dict(self.shmem)[vma.shmem]
        wanted = _file_flags(vma)
        return next(f.fd for f in self.files if f.path == vma.path and f.flags == wanted)


@dataclass(frozen=True)
class Area:
    """The restorer area, ready to be copied to base in the child."""

    base: int
    size: int  # the image, then the created threads' stacks
    image: bytes  # copied to base; the rest of the area is zero
    entry: int  # address of restorer_entry
    args: int  # address of restorer_args
    vdso_temp: Range
    keep: tuple[Range, ...] = field(default=())


def _file_flags(vma: Vma) -> int:
    # A shared writable mapping needs the file open for writing; a private one never does.
    return O_RDWR if vma.shared and vma.prot & mmap.PROT_WRITE else O_RDONLY


def fd_base(processes: list[Process], inherited: list[int]) -> int:
    """The lowest descriptor number above every target fd of the tree and every fd the runtime has open."""
    return max([fd.fd for process in processes for fd in process.fds] + inherited + [2]) + 1


def plan_fds(process: Process, first: int, shared: dict[int, int] | None = None) -> HelperFds:
    """Helper descriptor numbers from first on (fd_base's, above the tree's shared slots).

    shared: the slot of each of the tree's shared open files (file_id -> fd);
    the process keeps those its fds point at.
    """
    files: list[MappedFile] = []
    seen: set[tuple[str, int]] = set()
    for vma in process.vmas:
        if vma.kind is VmaKind.FILE and vma.shmem is None and (vma.path, _file_flags(vma)) not in seen:
            seen.add((vma.path, _file_flags(vma)))
            files.append(MappedFile(vma.path, _file_flags(vma), first + 3 + len(files)))
    # A SysV segment needs no descriptor: the restorer attaches it by its id.
    objects = sorted({vma.shmem for vma in process.vmas if vma.shmem is not None and vma.kind is not VmaKind.SYSV})
    next_fd = first + 3 + len(files)
    held = sorted({slot.file_id for slot in process.fds} & set(shared or {}))
    helpers = HelperFds(err=first, pages=first + 1, exe=first + 2, files=tuple(files),
                        shmem=tuple((shmem_id, next_fd + i) for i, shmem_id in enumerate(objects)),
                        shared=tuple((file_id, shared[file_id]) for file_id in held))
    # The child opens every number with the runtime's RLIMIT_NOFILE (it sets the image's later):
    # dup2 to a number at or above it fails, so such an image is refused before the fork.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if max(helpers.kept) >= limit:
        highest = max(fd.fd for fd in process.fds) if process.fds else 0
        raise RestoreError(process.pid, f"descriptor numbers up to {max(helpers.kept)} are needed (the image's "
                                        f"highest is {highest}), but this restore's RLIMIT_NOFILE is {limit}")
    return helpers


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


def _find_area(pid: int, taken: list[Range], size: int) -> Range:
    """The first free range of size bytes at or above AREA_PREFERRED_START, else the lowest one."""
    holes = free_gaps([(r.start, r.end) for r in taken], size)
    if not holes:
        raise RestoreError(pid, f"no free range of {size} bytes for the restorer in the target's layout")
    for hole_start, hole_end in holes:
        start = max(hole_start, AREA_PREFERRED_START)
        if start + size <= hole_end:
            return Range(start, start + size)
    return Range(holes[0][0], holes[0][0] + size)


def own_layout() -> list[Range]:
    """The runtime's own mappings, which every member (a copy of it) has too until its restorer unmaps them."""
    return [Range(m.start, m.end) for m in read_mappings(os.getpid())]


def _siginfo_signo(info: bytes) -> int:
    return int.from_bytes(info[:4], "little", signed=True)


def target_ranges(process: Process) -> list[Range]:
    """The target's layout, and the guard pages below a stack that grows down: nothing else goes there."""
    target = [Range(v.start, v.end) for v in process.vmas]
    target += [Range(max(v.start - 256 * PAGE_SIZE, 0), v.start) for v in process.vmas if v.growsdown]
    return target


def build_area(process: Process, xstates: dict[int, bytes], fds: HelperFds, vdso: VdsoPlan | None, own: list[Range],
               log_fd: int = -1) -> Area:
    """Choose the restorer area's address and fill it: blob, restorer_args, the arrays it points to, threads.

    xstates: each thread's xsave area, by tid; own: the layout of the restoring
    child before it maps the area (own_layout(), read once for a whole tree).
    """
    blob = blobs.load("restorer")
    target = target_ranges(process)
    running = [Range(start, end) for start, end in vdso.keep] if vdso else []
    if vdso is not None:
        target += [Range(start, end) for start, end in vdso.destinations]

    # The fill is the same twice: first to measure (at base 0), then in place.
    measured = Arena(blob.memory_size)
    _fill_area(measured, process, xstates, fds, vdso, keep=[Range(0, 0)] + running, temp=Range(0, 0),
               stacks=0, log_fd=log_fd)
    image_size = arch.align_up(measured.end, PAGE_SIZE)
    size = image_size + len(created_threads(process)) * blobs.protocol().RESTORER_THREAD_STACK_SIZE

    area = _find_area(process.pid, target + own, size)
    keep = sorted([area] + running, key=lambda r: r.start)
    temp = _find_area(process.pid, target + own + [area], sum(r.size for r in running))

    buffer = bytearray(image_size)
    blob.place(buffer, area.start)
    arena = Arena(blob.memory_size, area.start, buffer)
    args_address = _fill_area(arena, process, xstates, fds, vdso, keep=keep, temp=temp,
                              stacks=area.start + image_size, log_fd=log_fd)
    return Area(area.start, size, bytes(buffer), area.start + blob.exports["restorer_entry"], args_address, temp,
                tuple(keep))


def _fill_area(arena: Arena, process: Process, xstates: dict[int, bytes], fds: HelperFds, vdso: VdsoPlan | None,
               keep: list[Range], temp: Range, stacks: int, log_fd: int) -> int:
    """restorer_args and everything it points to, in the arena; returns the block's address."""
    proto = blobs.protocol()
    (args,), address = arena.add(proto.RestorerArgs)
    args.mode = proto.RESTORER_MODE_RESTORE
    args.log_fd = log_fd
    args.err_fd = fds.err
    args.pages_fd = fds.pages
    args.pid = process.pid
    _fill_keep(arena, args, keep)
    _fill_vmas(arena, args, process, fds)
    _fill_iovecs(arena, args, process)
    _fill_mm(arena, args, process, fds)
    if vdso is not None:
        _fill_vdso_moves(args, vdso, temp)
        _fill_vdso_proxy(arena, args, vdso)
    _fill_close_fds(arena, args, fds)
    _fill_signals(arena, args, process)
    _fill_creds(args.creds, process)
    _fill_threads(arena, args, process, xstates, stacks)
    args.fail_step = _requested_failure(proto)
    return address


def _fill_keep(arena: Arena, args, keep: list[Range]) -> None:
    """The ranges unmap_old leaves: the restorer area and the running vDSO/vvar pages, sorted."""
    slots, args.keep = arena.add(blobs.protocol().RestorerRange, len(keep))
    args.nr_keep = len(keep)
    for slot, r in zip(slots, keep):
        slot.start, slot.end = r.start, r.end


def _fill_vmas(arena: Arena, args, process: Process, fds: HelperFds) -> None:
    """The mappings map_vmas creates; the kernel's own (vdso, vvar) come from move_vdso instead."""
    vmas = [v for v in process.vmas if v.kind not in KERNEL_MAPPING_KINDS]
    slots, args.vmas = arena.add(blobs.protocol().RestorerVma, len(vmas))
    args.nr_vmas = len(vmas)
    for slot, v in zip(slots, vmas):
        slot.start, slot.end, slot.prot = v.start, v.end, v.prot
        slot.flags = (arch.MAP_SHARED if v.shared else arch.MAP_PRIVATE) | (arch.MAP_GROWSDOWN if v.growsdown else 0)
        slot.shmid, slot.shmflg = -1, 0
        if v.kind is VmaKind.SYSV:
            slot.fd, slot.offset, slot.shmid = -1, v.offset, v.shmem
            slot.shmflg = sysv.SHM_RDONLY if v.sysv_readonly else 0
        elif v.kind is VmaKind.FILE or v.shmem is not None:
            slot.fd, slot.offset = fds.fd_for(v), v.offset
        else:
            slot.fd, slot.offset = -1, 0
            slot.flags |= arch.MAP_ANONYMOUS
        slot.advice = sum(1 << MADV_NUMBERS[advice] for advice in v.advice)


def _fill_iovecs(arena: Arena, args, process: Process) -> None:
    """Where fill_pages reads each page run to; the runs lie back to back in the pages file from the first's offset."""
    runs = process.page_runs
    slots, args.iovs = arena.add(blobs.protocol().KIovec, len(runs))
    args.nr_iovs = len(runs)
    args.pages_offset = runs[0].offset if runs else 0
    for slot, run in zip(slots, runs):
        slot.base, slot.len = run.vaddr, run.size


def _fill_mm(arena: Arena, args, process: Process, fds: HelperFds) -> None:
    """prctl_mm_map for set_mm_map; the auxv it points to is copied into the area."""
    mm = process.mm
    for name in ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                 "arg_start", "arg_end", "env_start", "env_end"):
        setattr(args.mm, name, getattr(mm, name))
    auxv, args.mm.auxv = arena.add(ctypes.c_uint64, len(mm.auxv))
    auxv[:] = list(mm.auxv)
    args.mm.auxv_size, args.mm.exe_fd = ctypes.sizeof(auxv), fds.exe


def _fill_vdso_moves(args, vdso: VdsoPlan, temp: Range) -> None:
    args.nr_vdso_moves = len(vdso.moves)
    args.vdso_temp = temp.start
    for slot, move in zip(args.vdso_moves, vdso.moves):
        slot.old_addr, slot.new_addr, slot.size = move.old_addr, move.new_addr, move.size


def _fill_vdso_proxy(arena: Arena, args, vdso: VdsoPlan) -> None:
    """The patched old vDSO's bytes, which map_vdso_proxy copies to the old vDSO's address (size 0: no proxy)."""
    image = vdso.proxy.image if vdso.proxy is not None else b""
    args.vdso_proxy.image = arena.add_bytes(image)
    args.vdso_proxy.size = len(image)
    args.vdso_proxy.start = vdso.proxy.old_start if vdso.proxy is not None else 0


def _fill_close_fds(arena: Arena, args, fds: HelperFds) -> None:
    """The helper descriptors close_fds closes last (err_fd among them)."""
    slots, args.close_fds = arena.add(ctypes.c_int32, len(fds.all))
    args.nr_close_fds = len(fds.all)
    slots[:] = list(fds.all)


def _fill_signals(arena: Arena, args, process: Process) -> None:
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


def created_threads(process: Process) -> list[ThreadCore]:
    """The threads the restorer creates: all but the leader, or all of them when the dumped leader had exited."""
    return [thread for thread in process.threads if thread.tid != process.pid]


def _fill_threads(arena: Arena, args, process: Process, xstates: dict[int, bytes], stacks: int) -> None:
    """One restorer_thread per thread, each with the rt_sigframe it returns through.

    threads[0] is the restoring thread, the leader, which runs on the blob's
    own stack; thread i's restorer stack ends at stacks + i * size. A leader
    that had exited is none of the dumped threads: it only restores the
    process, creates the others and exits again (leader_exits).
    """
    proto = blobs.protocol()
    entries = [None if process.leader_exited else process.threads[0]] + created_threads(process)
    slots, args.threads = arena.add(proto.RestorerThread, len(entries))
    args.nr_threads = len(entries)
    args.leader_exits = int(process.leader_exited)
    for position, (slot, thread) in enumerate(zip(slots, entries)):
        slot.stack = stacks + position * proto.RESTORER_THREAD_STACK_SIZE if position else 0
        if thread is None:  # the exiting leader: its name, and nothing else to set
            slot.tid, slot.ss_flags = process.pid, SS_DISABLE
            _fill_name(slot, process.comm)
            continue
        slot.tid = thread.tid
        slot.ss_sp, slot.ss_flags, slot.ss_size = thread.altstack.sp, thread.altstack.flags, thread.altstack.size
        if thread.rseq is not None:
            slot.rseq_addr, slot.rseq_len, slot.rseq_sig = thread.rseq.address, thread.rseq.size, thread.rseq.signature
        # rt_sigreturn does not touch the segment bases: the TLS pointer is set by the restorer.
        slot.fs_base, slot.gs_base = thread.regs.fs_base, thread.regs.gs_base
        slot.clear_child_tid = thread.clear_child_tid
        slot.robust_list, slot.robust_list_len = thread.robust_list, thread.robust_list_len
        _fill_name(slot, thread.comm or process.comm)
        pending = _queued_again(thread.pending, process)
        slot.nr_pending = len(pending)
        slot.pending = _add_siginfos(arena, proto.RestorerSiginfo, pending)
        xstate = xstates[thread.tid]
        frame_view, frame_address = arena.add(ctypes.c_uint8, arch.rt_sigframe_size(len(xstate)))
        frame, slot.sigreturn_sp = arch.build_rt_sigframe(thread.regs, xstate, thread.blocked, frame_address)
        frame_view[:len(frame)] = frame


def _fill_name(slot, name: str) -> None:
    """The kernel keeps TASK_COMM_LEN - 1 bytes of a name; the slot is zero-filled, so it ends in NUL."""
    encoded = os.fsencode(name)[:len(slot.comm) - 1]
    slot.comm[:len(encoded)] = list(encoded)


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

