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
Arena (runtime/task/restorer_block.py) to one filler per concern (_fill_vmas, _fill_threads, ...); then, page
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
from runtime.images.model import KERNEL_MAPPING_KINDS, PAGE_SIZE, Creds, Process, ThreadCore, Vma, VmaKind
from runtime.kernel.procfs.maps import read_layout
from runtime.mm.address_space import free_gaps
from runtime.mm.vdso import VdsoPlan
from runtime.task.restorer_block import MADV_NUMBERS, Arena, fill_mm, fill_name, fill_signals, fill_thread, fill_vma

# Below 4 GiB sit non-PIE executables and their brk heaps; above the gaps
# near TASK_SIZE the kernel places mmaps and the stack. Prefer the first gap
# from here on: far from both, so the child's own allocations do not land there.
AREA_PREFERRED_START = 1 << 32


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
    return [Range(m.start, m.end) for m in read_layout(os.getpid())]


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
    fill_mm(arena, args, process, fds.exe)
    if vdso is not None:
        _fill_vdso_moves(args, vdso, temp)
        _fill_vdso_proxy(arena, args, vdso)
    _fill_close_fds(arena, args, fds)
    fill_signals(arena, args, process)
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
        mapped_by_fd = v.kind is not VmaKind.SYSV and (v.kind is VmaKind.FILE or v.shmem is not None)
        fill_vma(slot, v, fds.fd_for(v) if mapped_by_fd else -1)


def _fill_iovecs(arena: Arena, args, process: Process) -> None:
    """Where fill_pages reads each page run to; the runs lie back to back in the pages file from the first's offset."""
    runs = process.page_runs
    slots, args.iovs = arena.add(blobs.protocol().KIovec, len(runs))
    args.nr_iovs = len(runs)
    args.pages_offset = runs[0].offset if runs else 0
    for slot, run in zip(slots, runs):
        slot.base, slot.len = run.vaddr, run.size


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
            fill_name(slot, process.comm)
            continue
        fill_thread(arena, slot, process, thread, xstates[thread.tid])


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

