"""`exe`: one process of an image written as an ELF executable that resumes it when run (docs/exe.md).

Why an executable: the kernel's ELF loader (load_elf_binary) needs nothing
but program headers: it maps every PT_LOAD at its address, sets the break
after the last one and jumps to e_entry. So the process's anonymous memory
becomes PT_LOADs at its dumped addresses with its saved pages in the file
(`readelf -l` shows its layout), and one more PT_LOAD carries the loader
blob (pie/loader/) with everything it needs; e_entry is the loader's
entry. The loader does what the kernel cannot: it leaves the kernel's
stack, moves the vDSO to its dumped address, maps the dumped stack and the
files by path (checked: size and a crc32 of each mapped range), fills them
from the executable, sets the mm fields (brk included) with PR_SET_MM_MAP,
signal state and descriptors, and rt_sigreturns into the saved registers,
with the restore steps the restorer runs (pie/common/). Nothing is
privileged: it runs as any user, under its dumped PID and TIDs in a user and
PID namespace of its own (new ones where namespaces cannot be had), its
stdio the shell's.

File layout: headers; the placed mappings' bytes (each at an offset
congruent to its address mod 4096, as PT_LOADs need); the pages of the
mappings the loader maps, back to back (fill_pages reads them with preadv
from /proc/self/exe); the loader segment; last, a crc32 (zlib's) of all
bytes before it, which the loader checks first.
"""

import ctypes
import mmap
import os
import stat
import zlib
from dataclasses import dataclass

from runtime.arch import x86_64 as arch
from runtime.convert import elf
from runtime.convert.copy import copy_range
from runtime.errors import ReviveError
from runtime.images import loader
from runtime.images.loader import ProcessImage
from runtime.images.model import KERNEL_MAPPING_KINDS, PAGE_SIZE, FdKind, FileEntry, Process, Vma, VmaKind
from runtime.infect import blobs
from runtime.mm.address_space import free_gaps
from runtime.task.restorer_block import Arena, fill_mm, fill_signals, fill_thread, fill_vma

# The kernel puts a new process's stack below TASK_SIZE by up to 16 GiB (its random offset) and
# the mmap base below that: a PT_LOAD above this limit could collide with the stack, and exec
# would fail, so mappings up there are mapped by the loader once it has left the kernel's stack.
PLACE_LIMIT = 0x7FF000000000
# Below 4 GiB sit non-PIE executables and their brk heaps: the loader segment goes above.
SEGMENT_PREFERRED_START = 1 << 32
# load_elf_phdrs refuses a program header table above 64 KiB.
MAX_PHDRS = 65536 // elf.PHDR.size
O_ACCMODE, O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_CLOEXEC = 0o3, 0o100, 0o200, 0o400, 0o1000, 0o2000000
U32_NONE = 0xFFFFFFFF  # prctl_mm_map.exe_fd: leave the exe link (what an unprivileged caller may do)
CRC_SIZE = 4
SIGEV_THREAD_ID = 4


class ExeError(ReviveError):
    """The executable could not be written: names the image, the process or the output."""


@dataclass(frozen=True)
class Load:
    """One PT_LOAD of a placed mapping: filesz bytes from the image at vaddr (file offset chosen later)."""

    vma: Vma
    vaddr: int
    filesz: int
    memsz: int
    offset: int = 0


@dataclass(frozen=True)
class Segment:
    """The loader's PT_LOAD: its bytes (blob, arguments) at start; memsz adds the room the vDSO moves through."""

    start: int
    image: bytes
    memsz: int
    entry: int


def write_exe(directory: str | os.PathLike, output: str | os.PathLike, pid: int | None = None,
              standalone: bool = False) -> Process:
    """Write the executable that resumes process pid of the image (default: its root); the process written.

    standalone: the file mappings' contents are embedded (the files as they are now, the image's pages over
    them) and mapped as private memory, so the executable needs none of those files where it runs."""
    with loader.load(directory, check_cpu=False) as checkpoint:  # the executable checks the CPU it runs on
        images = {image.process.pid: image for image in checkpoint.processes}
        image = images.get(checkpoint.root.process.pid if pid is None else pid)
        if image is None:
            raise ExeError(f"{directory}: no live process {pid} in the image (it holds {sorted(images)})")
        process = image.process
        shared = {entry.id: entry for entry in checkpoint.tree.files}
        _refuse_unsupported(process, standalone)
        files = {entry.id: entry for entry in process.files} | shared
        embedded = _embedded_contents(image) if standalone else {}
        placed = [v for v in process.vmas if _placeable(v, embedded)]
        mapped = [v for v in process.vmas if not _placeable(v, embedded) and v.kind not in KERNEL_MAPPING_KINDS]
        loads = _plan_loads(process, placed, embedded)
        mapped_runs = _pieces(process, mapped, embedded)
        headers_size = elf.EHDR.size + elf.PHDR.size * (len(loads) + 1)
        offset = arch.align_up(headers_size, PAGE_SIZE)
        laid = []
        for load in loads:
            laid.append(Load(load.vma, load.vaddr, load.filesz, load.memsz, offset if load.filesz else 0))
            offset += arch.align_up(load.filesz, PAGE_SIZE)
        pages_offset = offset
        offset += sum(run.size for run in mapped_runs)
        segment = _build_segment(image, files, placed, mapped, mapped_runs, pages_offset, embedded)
        segment_offset = arch.align_up(offset, PAGE_SIZE)
        _write(output, image, laid, mapped_runs, pages_offset, segment, segment_offset, embedded)
        return process


def _refuse_unsupported(process: Process, standalone: bool) -> None:
    """What this executable cannot bring back is refused before anything is written, naming it."""
    def refuse(what: str) -> None:
        raise ExeError(f"pid {process.pid}: {what}")

    if process.leader_exited:
        refuse("its leader had exited (pthread_exit): the executable needs the leader to run the loader")
    for timer in process.posix_timers:
        if timer.notify & SIGEV_THREAD_ID:
            refuse(f"POSIX timer {timer.id} signals thread {timer.tid}, and every thread gets a new TID")
    for v in process.vmas:
        if v.shmem is not None or v.kind is VmaKind.SYSV:
            refuse(f"the mapping at {v.start:#x} is shared memory, which an executable cannot carry")
        if v.kind is VmaKind.FILE and not v.path:
            refuse(f"the file mapping at {v.start:#x} has no path to map again")
        if standalone and v.kind is VmaKind.FILE and v.shared and v.prot & mmap.PROT_WRITE:
            refuse(f"the mapping at {v.start:#x} writes to {v.path}: --standalone cannot embed a shared writable "
                   f"file mapping")
    if process.vdso is not None and process.vdso.proxy:
        refuse("its vDSO is a proxy revive installed; the executable moves only the kernel's own vDSO")


def _placeable(v: Vma, embedded: dict[int, bytes]) -> bool:
    """Private anonymous memory (heap included), or an embedded file mapping, that the kernel can map from a
    PT_LOAD at its dumped address."""
    if v.start in embedded:
        return v.end <= PLACE_LIMIT
    return (v.kind in (VmaKind.ANON, VmaKind.HEAP) and not v.shared and v.shmem is None and not v.growsdown
            and v.end <= PLACE_LIMIT)


@dataclass(frozen=True)
class Piece:
    """size bytes of memory at vaddr: the image's pages at offset in its pages file, or data (embedded)."""

    vaddr: int
    size: int
    offset: int = 0
    data: bytes | None = None


def _pieces(process: Process, vmas: list[Vma], embedded: dict[int, bytes]) -> list[Piece]:
    """What the file holds of vmas, in address order: an embedded mapping whole, else the image's page runs
    clipped to the mappings (runs never cross a mapping, but clip anyway)."""
    out = []
    for v in vmas:
        if v.start in embedded:
            out.append(Piece(v.start, v.size, data=embedded[v.start]))
            continue
        for run in process.page_runs:
            start, end = max(run.vaddr, v.start), min(run.vaddr + run.size, v.end)
            if start < end:
                out.append(Piece(start, end - start, run.offset + start - run.vaddr))
    return out


def _embedded_contents(image: ProcessImage) -> dict[int, bytes]:
    """Each file mapping's memory (by start): the file's bytes as they are now (zeros past its end), the
    image's pages over them. A read-only shared mapping (a cache file) becomes private memory with its bytes."""
    contents = {}
    for v in image.process.vmas:
        if v.kind is not VmaKind.FILE:
            continue
        try:
            with open(v.path, "rb") as f:
                data = bytearray(os.pread(f.fileno(), v.size, v.offset).ljust(v.size, b"\0"))
        except OSError as exc:
            raise ExeError(f"pid {image.process.pid}: {v.path}: {exc.strerror} (--standalone embeds it)") from exc
        for piece in _pieces(image.process, [v], {}):
            data[piece.vaddr - v.start:piece.vaddr - v.start + piece.size] = os.pread(image.pages.fileno(),
                                                                                  piece.size, piece.offset)
        contents[v.start] = bytes(data)
    return contents


def _plan_loads(process: Process, placed: list[Vma], embedded: dict[int, bytes]) -> list[Load]:
    """At most two PT_LOADs per placed mapping: its pages from the first saved one to the last (pages the
    image lacks in between are zeros in the file), and, before them, the untouched start (memsz only)."""
    loads = []
    for v in placed:
        runs = _pieces(process, [v], embedded)
        if not runs:
            loads.append(Load(v, v.start, 0, v.size))
            continue
        first, last_end = runs[0].vaddr, runs[-1].vaddr + runs[-1].size
        if first > v.start:
            loads.append(Load(v, v.start, 0, first - v.start))
        loads.append(Load(v, first, last_end - first, v.end - first))
    if len(loads) + 1 > MAX_PHDRS:
        raise ExeError(f"pid {process.pid}: {len(loads)} PT_LOADs, the kernel loads at most {MAX_PHDRS - 1}")
    return loads


def _file_flags(v: Vma) -> int:
    return os.O_RDWR if v.shared and v.prot & mmap.PROT_WRITE else os.O_RDONLY


def _build_segment(image: ProcessImage, files: dict[int, FileEntry], placed: list[Vma], mapped: list[Vma],
                   mapped_runs: list[Piece], pages_offset: int, embedded: dict[int, bytes]) -> Segment:
    """The loader's segment, filled twice like the restorer area: once to measure, once in place."""
    blob = blobs.load("loader")
    proto = blobs.protocol()
    measured = Arena(blob.memory_size)
    _fill(measured, proto, image, files, placed, mapped, mapped_runs, pages_offset, embedded)
    size = arch.align_up(measured.end, PAGE_SIZE)
    stacks = (len(image.process.threads) - 1) * proto.RESTORER_THREAD_STACK_SIZE
    memsz = size + proto.LOADER_VDSO_TEMP_SIZE + stacks
    taken = [(v.start, v.end) for v in image.process.vmas]
    taken += [(max(v.start - 256 * PAGE_SIZE, 0), v.start) for v in image.process.vmas if v.growsdown]
    holes = [(max(start, SEGMENT_PREFERRED_START), end) for start, end in free_gaps(taken, memsz)]
    start = next((s for s, e in holes if s + memsz <= min(e, PLACE_LIMIT)), None)
    if start is None:
        raise ExeError(f"pid {image.process.pid}: no free {memsz} bytes for the loader in the dumped layout")
    buffer = bytearray(size)
    blob.place(buffer, start)
    arena = Arena(blob.memory_size, start, buffer)
    la_address = _fill(arena, proto, image, files, placed, mapped, mapped_runs, pages_offset, embedded,
                       temp=start + size, stacks=start + size + proto.LOADER_VDSO_TEMP_SIZE)
    ctypes.c_uint64.from_buffer(buffer, blob.exports["loader_args"]).value = la_address
    return Segment(start, bytes(buffer), memsz, start + blob.exports["loader_entry"])


def _fill(arena: Arena, proto, image: ProcessImage, files: dict[int, FileEntry], placed: list[Vma],
          mapped: list[Vma], mapped_runs: list[Piece], pages_offset: int, embedded: dict[int, bytes], temp: int = 0,
          stacks: int = 0) -> int:
    """loader_args, the restorer_args it points to and their arrays; returns loader_args' address.

    The loader runs threads[0], the leader, on its own stack; thread i (the others, which it creates) runs on
    the stack that ends at stacks + i * RESTORER_THREAD_STACK_SIZE, in the segment's zero-filled tail."""
    process = image.process
    (la,), la_address = arena.add(proto.LoaderArgs)
    (args,), la.restore = arena.add(proto.RestorerArgs)
    args.mode, args.log_fd, args.err_fd = proto.RESTORER_MODE_RESTORE, -1, -1
    first_fd = max([slot.fd for slot in process.fds] + [2]) + 1
    args.pages_fd = first_fd
    paths: dict[tuple[str, int], int] = {}
    by_path = [v for v in mapped if v.kind is VmaKind.FILE and v.start not in embedded]
    for v in by_path:
        if (v.path, _file_flags(v)) not in paths:
            paths[(v.path, _file_flags(v))] = first_fd + 1 + len(paths)
    _fill_files(arena, proto, la, paths, process.pid)
    _fill_checks(arena, proto, la, by_path, process.pid)
    _fill_fds(arena, proto, la, process, files)
    vmas, args.vmas = arena.add(proto.RestorerVma, len(mapped))
    args.nr_vmas = len(mapped)
    for slot, v in zip(vmas, mapped):
        fill_vma(slot, v, paths[(v.path, _file_flags(v))] if v in by_path else -1)
        if v.start in embedded:  # its bytes are in the file now: private memory, even of a shared read-only map
            slot.flags = slot.flags & ~arch.MAP_SHARED | arch.MAP_PRIVATE
    placed_slots, la.placed = arena.add(proto.RestorerVma, len(placed))
    la.nr_placed = len(placed)
    for slot, v in zip(placed_slots, placed):
        fill_vma(slot, v, -1)
    iovs, args.iovs = arena.add(proto.KIovec, len(mapped_runs))
    args.nr_iovs, args.pages_offset = len(mapped_runs), pages_offset
    for slot, run in zip(iovs, mapped_runs):
        slot.base, slot.len = run.vaddr, run.size
    fill_mm(arena, args, process, U32_NONE)  # the exe link kept: no privilege needed
    _fill_ids(args, process)
    _fill_vdso(arena, la, image)
    la.temp = temp
    close, args.close_fds = arena.add(ctypes.c_int32, 1 + len(paths))
    args.nr_close_fds = 1 + len(paths)
    close[:] = [first_fd] + sorted(paths.values())
    fill_signals(arena, args, process)
    slots, args.threads = arena.add(proto.RestorerThread, len(process.threads))
    args.nr_threads = len(process.threads)
    for position, (slot, thread) in enumerate(zip(slots, process.threads)):
        fill_thread(arena, slot, process, thread, image.xstates[thread.tid])
        slot.stack = stacks + position * proto.RESTORER_THREAD_STACK_SIZE if position else 0
    la.xfeatures = 0
    for xstate in image.xstates.values():
        la.xfeatures |= arch.xstate_info(xstate).features
    return la_address


def _add_string(arena: Arena, text: str) -> int:
    return arena.add_bytes(os.fsencode(text) + b"\0")


def _fill_files(arena: Arena, proto, la, paths: dict[tuple[str, int], int], pid: int) -> None:
    """Each mapped file with the size it has now, which the loader finds again or refuses to start."""
    slots, la.files = arena.add(proto.LoaderFile, len(paths))
    la.nr_files = len(paths)
    for slot, ((path, flags), fd) in zip(slots, paths.items()):
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ExeError(f"pid {pid}: {path}: {exc.strerror} (the executable maps it by path)") from exc
        slot.path, slot.size, slot.flags, slot.fd = _add_string(arena, path), size, flags, fd


def _fill_checks(arena: Arena, proto, la, mapped: list[Vma], pid: int) -> None:
    """A crc32 of the bytes each readable file mapping maps, from the file as it is now."""
    checks = [v for v in mapped if v.kind is VmaKind.FILE and (not v.shared or v.prot & mmap.PROT_READ)]
    slots, la.checks = arena.add(proto.LoaderCheck, len(checks))
    la.nr_checks = len(checks)
    for slot, v in zip(slots, checks):
        with open(v.path, "rb") as f:
            length = min(v.size, max(0, os.fstat(f.fileno()).st_size - v.offset))
            data = os.pread(f.fileno(), length, v.offset)
        if len(data) != length:
            raise ExeError(f"pid {pid}: {v.path}: shorter than its mapping at {v.start:#x} says")
        slot.path, slot.start, slot.length, slot.crc = _add_string(arena, v.path), v.start, length, zlib.crc32(data)


def _fill_fds(arena: Arena, proto, la, process: Process, files: dict[int, FileEntry]) -> None:
    """Descriptors above 2 reopened by path: regular files and devices; 0, 1 and 2 are the shell's."""
    reopened = []
    for slot in process.fds:
        if slot.fd <= 2:
            continue
        entry = files[slot.file_id]
        if entry.kind not in (FdKind.FILE, FdKind.CHR) or entry.node is None or \
                not (stat.S_ISREG(entry.node.mode) or stat.S_ISCHR(entry.node.mode)):
            raise ExeError(f"pid {process.pid}: fd {slot.fd} is a {entry.kind.value}: the executable reopens only "
                           f"regular files and devices by path")
        reopened.append((slot, entry))
    slots, la.fds = arena.add(proto.LoaderFd, len(reopened))
    la.nr_fds = len(reopened)
    for out, (slot, entry) in zip(slots, reopened):
        out.path, out.pos, out.fd, out.cloexec = _add_string(arena, entry.node.path), entry.pos, slot.fd, slot.cloexec
        out.flags = entry.flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)


def _fill_ids(args, process: Process) -> None:
    """The ids the loader gives back in its namespaces: the dumped uid and gid, mapped onto the runner's, and
    each thread's capability sets, narrowed to the dumped ones (the rest of restorer_creds is unused here)."""
    creds = process.creds
    args.creds.uid, args.creds.gid = creds.uids[0], creds.gids[0]
    args.creds.cap_effective, args.creds.cap_permitted = creds.cap_effective, creds.cap_permitted
    args.creds.cap_inheritable = creds.cap_inheritable


def _fill_vdso(arena: Arena, la, image: ProcessImage) -> None:
    """The dumped vDSO's bytes and its vvar pages' places: the loader moves the running one there if it matches."""
    info = image.process.vdso
    if info is None or image.vdso_image is None:
        return
    la.vdso_image = arena.add_bytes(image.vdso_image[:info.vdso_size])
    la.vdso_start, la.vdso_size = info.vdso_start, info.vdso_size
    la.vvar_start, la.vvar_size = info.vvar_start or 0, info.vvar_size
    la.vclock_start, la.vclock_size = info.vvar_vclock_start or 0, info.vvar_vclock_size


def _write(output: str | os.PathLike, image: ProcessImage, loads: list[Load], mapped_runs: list[Piece],
           pages_offset: int, segment: Segment, segment_offset: int, embedded: dict[int, bytes]) -> None:
    fd = os.open(output, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o755)
    try:
        headers = [elf.file_header(elf.ET_EXEC, segment.entry, len(loads) + 1)]
        headers += [elf.program_header(elf.PT_LOAD, elf.prot_flags(load.vma.prot), load.offset, load.vaddr,
                                       load.filesz, load.memsz) for load in loads]
        headers.append(elf.program_header(elf.PT_LOAD, elf.PF_R | elf.PF_W | elf.PF_X, segment_offset,
                                          segment.start, len(segment.image), segment.memsz))
        os.pwrite(fd, b"".join(headers), 0)
        pages = image.pages.fileno()
        for load in loads:
            for piece in _pieces(image.process, [load.vma], embedded):
                if load.vaddr <= piece.vaddr < load.vaddr + load.filesz:
                    _write_piece(fd, pages, piece, load.offset + piece.vaddr - load.vaddr)
        offset = pages_offset
        for piece in mapped_runs:
            _write_piece(fd, pages, piece, offset)
            offset += piece.size
        os.pwrite(fd, segment.image, segment_offset)
        os.pwrite(fd, _crc_of(fd, segment_offset + len(segment.image)).to_bytes(CRC_SIZE, "little"),
                  segment_offset + len(segment.image))
        os.fchmod(fd, 0o755)
    except OSError as exc:
        raise ExeError(f"{output}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _write_piece(fd: int, pages: int, piece: Piece, offset: int) -> None:
    if piece.data is not None:
        os.pwrite(fd, piece.data, offset)
    else:
        copy_range(pages, piece.offset, fd, offset, piece.size)


def _crc_of(fd: int, length: int) -> int:
    crc, offset = 0, 0
    while offset < length:
        chunk = os.pread(fd, min(1 << 24, length - offset), offset)
        if not chunk:
            break
        crc, offset = zlib.crc32(chunk, crc), offset + len(chunk)
    return crc
