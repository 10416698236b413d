"""`core`: one process of an image written as an ELF core file (ET_CORE) that gdb reads.

Why from the image and not from the live process: the image already holds
what a debugger needs, frozen at one instant (every thread's registers and
xstate, the memory the process wrote, its auxv and mappings), so a process
dumped once can be debugged any number of times, on another machine, while
it runs on or after it was restored.

What is written, as the kernel's own core dumps lay it out
(fs/binfmt_elf.c): the ELF header, a PT_NOTE and one PT_LOAD per mapping.
The notes: per thread NT_PRSTATUS (its registers, ids, signal masks), then
for the first thread the process's NT_PRPSINFO (state, ids, name, command
line), NT_SIGINFO (SIGSTOP: the dump stopped it), NT_AUXV and NT_FILE (the
file behind each file mapping, so gdb finds the executable and its
libraries), and per thread NT_FPREGSET and NT_X86_XSTATE (the xsave area
the dump read). Each PT_LOAD holds the mapping's memory: the file it maps
(a library's code and data read from the file) or its shared memory
object, with the pages the image saved on top; what neither has reads as
zeros (a hole in the core file). The kernel's [vvar] pages and mappings
marked MADV_DONTDUMP are headers only, as in the kernel's cores.
"""

import io
import os
import struct
from dataclasses import dataclass

from runtime.arch import x86_64 as arch
from runtime.convert import elf
from runtime.convert.copy import copy_range
from runtime.errors import ReviveError
from runtime.images import loader
from runtime.images.model import Process, SharedMemory, ThreadCore, Vma, VmaAdvice, VmaKind
from runtime.images.loader import ProcessImage

NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_AUXV = 1, 2, 3, 6
NT_SIGINFO, NT_FILE, NT_X86_XSTATE = 0x53494749, 0x46494C45, 0x202
SIGSTOP = 19
FXSAVE_SIZE = 512  # the legacy region of the xsave area: NT_FPREGSET, struct user_fpregs_struct

# struct elf_prstatus (x86_64, 336 bytes): elf_siginfo {signo, code, errno}, pr_cursig, pr_sigpend, pr_sighold,
# pr_pid, pr_ppid, pr_pgrp, pr_sid, four struct timeval (times, zero here), pr_reg (27 u64), pr_fpvalid.
PRSTATUS = struct.Struct("<iiih2xQQiiii64x27Qi4x")
# struct elf_prpsinfo (x86_64, 136 bytes): pr_state, pr_sname, pr_zomb, pr_nice, pr_flag, pr_uid, pr_gid, pr_pid,
# pr_ppid, pr_pgrp, pr_sid, pr_fname[16], pr_psargs[80].
PRPSINFO = struct.Struct("<bcbb4xQIIiiii16s80s")
SIGINFO_SIZE = 128
REGISTER_ORDER = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
                  "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")


class CoreError(ReviveError):
    """The core file could not be written: names the image or the output."""


@dataclass(frozen=True)
class Load:
    """One PT_LOAD: a mapping and where its bytes go in the core (filesz 0: a header only)."""

    vma: Vma
    offset: int
    filesz: int


def write_core(directory: str | os.PathLike, output: str | os.PathLike, pid: int | None = None) -> Process:
    """Write the core file of process pid of the image (default: its root) to output; the process written."""
    with loader.load(directory, check_cpu=False) as checkpoint:
        images = {image.process.pid: image for image in checkpoint.processes}
        image = images.get(checkpoint.root.process.pid if pid is None else pid)
        if image is None:
            raise CoreError(f"{directory}: no live process {pid} in the image (it holds {sorted(images)})")
        notes = _notes(image)
        loads = _plan_loads(image.process, elf.EHDR.size + elf.PHDR.size * (1 + len(image.process.vmas)) +
                            len(notes))
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            headers = [elf.file_header(elf.ET_CORE, 0, 1 + len(loads)),
                       elf.program_header(elf.PT_NOTE, 0, elf.EHDR.size + elf.PHDR.size * (1 + len(loads)), 0,
                                          len(notes), 0, align=4)]
            headers += [elf.program_header(elf.PT_LOAD, elf.prot_flags(load.vma.prot), load.offset, load.vma.start,
                                           load.filesz, load.vma.size) for load in loads]
            os.pwrite(fd, b"".join(headers) + notes, 0)
            objects = {obj.id: obj for obj in checkpoint.tree.shared_memory}
            for load in loads:
                if load.filesz:
                    _write_memory(fd, load, image, objects, checkpoint.shmem)
            end = max((load.offset + load.filesz for load in loads), default=0)
            os.ftruncate(fd, max(end, os.fstat(fd).st_size))
        except OSError as exc:
            raise CoreError(f"{output}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return image.process


def _plan_loads(process: Process, headers_size: int) -> list[Load]:
    offset = arch.align_up(headers_size, elf.PAGE_SIZE)
    loads = []
    for vma in process.vmas:
        dumped = vma.kind not in (VmaKind.VVAR, VmaKind.VVAR_VCLOCK) and VmaAdvice.DONTDUMP not in vma.advice
        loads.append(Load(vma, offset if dumped else 0, vma.size if dumped else 0))
        offset += vma.size if dumped else 0
    return loads


def _write_memory(fd: int, load: Load, image: ProcessImage, objects: dict[int, SharedMemory],
                  shmem: dict[int, io.FileIO]) -> None:
    """The mapping's bytes at load.offset: its file or shared object, the image's pages over them."""
    vma = load.vma
    if vma.kind is VmaKind.VDSO and image.vdso_image is not None:
        os.pwrite(fd, image.vdso_image[:vma.size], load.offset)
        return
    if vma.shmem is not None:
        source = shmem[vma.shmem].fileno()
        for extent in objects[vma.shmem].extents:
            start, end = max(extent.start, vma.offset), min(extent.start + extent.length, vma.offset + vma.size)
            if start < end:
                copy_range(source, extent.offset + start - extent.start, fd, load.offset + start - vma.offset,
                           end - start)
    elif vma.kind is VmaKind.FILE and vma.path:
        _copy_file(vma, fd, load.offset)
    for run in image.process.page_runs:
        start, end = max(run.vaddr, vma.start), min(run.vaddr + run.size, vma.end)
        if start < end:
            copy_range(image.pages.fileno(), run.offset + start - run.vaddr, fd, load.offset + start - vma.start,
                  end - start)


def _copy_file(vma: Vma, fd: int, offset: int) -> None:
    """A file mapping's bytes from the file, if it is still there; what it lacks reads as zeros."""
    try:
        source = os.open(vma.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # gone or unreadable: the image's own pages only
    try:
        length = min(vma.size, max(0, os.fstat(source).st_size - vma.offset))
        copy_range(source, vma.offset, fd, offset, length)
    finally:
        os.close(source)


def _notes(image: ProcessImage) -> bytes:
    process = image.process
    threads = list(process.threads)
    parts = []
    for index, thread in enumerate(threads):
        parts.append(elf.note(b"CORE", NT_PRSTATUS, _prstatus(process, thread)))
        if index == 0:
            parts.append(elf.note(b"CORE", NT_PRPSINFO, _prpsinfo(process, image)))
            parts.append(elf.note(b"CORE", NT_SIGINFO, struct.pack("<iii", SIGSTOP, 0, 0).ljust(SIGINFO_SIZE, b"\0")))
            parts.append(elf.note(b"CORE", NT_AUXV, struct.pack(f"<{len(process.mm.auxv)}Q", *process.mm.auxv)))
            parts.append(elf.note(b"CORE", NT_FILE, _file_note(process)))
        xstate = image.xstates[thread.tid]
        parts.append(elf.note(b"CORE", NT_FPREGSET, xstate[:FXSAVE_SIZE]))
        parts.append(elf.note(b"LINUX", NT_X86_XSTATE, xstate))
    return b"".join(parts)


def _prstatus(process: Process, thread: ThreadCore) -> bytes:
    pending = 0
    for info in thread.pending + process.shared_pending:
        pending |= 1 << (struct.unpack_from("<i", info)[0] - 1)
    regs = [getattr(thread.regs, name) for name in REGISTER_ORDER]
    return PRSTATUS.pack(SIGSTOP, 0, 0, SIGSTOP, pending, thread.blocked, thread.tid, process.ppid, process.pgid,
                         process.sid, *regs, 1)


def _prpsinfo(process: Process, image: ProcessImage) -> bytes:
    arguments = _read_memory(image, process.mm.arg_start, min(process.mm.arg_end - process.mm.arg_start, 80))
    return PRPSINFO.pack(0, b"T", 0, 0, 0, process.creds.uids[0], process.creds.gids[0], process.pid,
                         process.ppid, process.pgid, process.sid, process.comm.encode()[:15],
                         arguments.rstrip(b"\0").replace(b"\0", b" ")[:79])


def _read_memory(image: ProcessImage, address: int, length: int) -> bytes:
    """length bytes the process had at address, as far as the image's pages hold them (b"" where not)."""
    for run in image.process.page_runs:
        if run.vaddr <= address and address + length <= run.vaddr + run.size:
            return os.pread(image.pages.fileno(), length, run.offset + address - run.vaddr)
    return b""


def _file_note(process: Process) -> bytes:
    """NT_FILE: count, page size, then (start, end, offset in pages) per file mapping, then their names."""
    mapped = [vma for vma in process.vmas if vma.kind is VmaKind.FILE and vma.path]
    ranges = b"".join(struct.pack("<QQQ", vma.start, vma.end, vma.offset // elf.PAGE_SIZE) for vma in mapped)
    names = b"".join(vma.path.encode() + b"\0" for vma in mapped)
    return struct.pack("<QQ", len(mapped), elf.PAGE_SIZE) + ranges + names
