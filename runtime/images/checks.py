"""The semantic checks of a decoded image: what the types alone cannot say.

Why: the codec guarantees every field exists and has its type; the restore
needs more before it forks anything, because the restorer runs without
libc or error reporting to speak of, after the old address space is gone:
a VMA in the kernel half, two overlapping VMAs, or a page run that reads
past the end of the pages file would kill the restored process half-way,
or worse, restore it wrong. Each check raises an ImageError naming the
file and the field path. The writer runs the same checks before it writes
an inventory, so a dump never produces an image its restore would refuse.
"""

from collections.abc import Iterable, Mapping

from runtime.errors import ImageError
from runtime.images import layout
from runtime.images.model import (KERNEL_MAPPING_KINDS, NR_ITIMERS, NR_RLIMITS, NSIG, PAGE_SIZE, TASK_SIZE, FdKind,
                                  Inventory, Process, RseqCase, ThreadCore, VdsoInfo, Vma, VmaAdvice, VmaKind)

SIGINFO_SIZE = 128
PROT_MASK = 0x7  # PROT_READ | PROT_WRITE | PROT_EXEC
U32_MAX = (1 << 32) - 1
# The legacy 512-byte area plus the 64-byte xsave header is the least an xsave area holds;
# no CPU's user area is near 64 KiB (AMX, the largest, makes it about 11 KiB).
XSTATE_MIN = 576
XSTATE_MAX = 64 * 1024


def check_inventory(inventory: Inventory) -> None:
    """The inventory's own fields, before any other file is trusted."""
    file = layout.INVENTORY
    if inventory.format_version != layout.FORMAT_VERSION:
        raise ImageError(file, "format_version",
                         f"unsupported version {inventory.format_version} (this tool reads {layout.FORMAT_VERSION})")
    if inventory.tool != layout.TOOL:
        raise ImageError(file, "tool", f"written by {inventory.tool!r}, not {layout.TOOL}")
    if not XSTATE_MIN <= inventory.xstate_size <= XSTATE_MAX:
        raise ImageError(file, "xstate_size", f"{inventory.xstate_size} is outside {XSTATE_MIN}..{XSTATE_MAX}")
    for name in inventory.files:
        if layout.parse_name(name) is None:
            raise ImageError(file, f"files[{name!r}]", "not a file name of this image format")
    if layout.process_file(inventory.root_pid) not in inventory.files:
        raise ImageError(file, "root_pid", f"no {layout.process_file(inventory.root_pid)} in files")


def check_process(process: Process, file: str, inventory: Inventory, sizes: Mapping[str, int]) -> None:
    """All of a process's invariants; sizes: byte size of each file the inventory lists."""
    expected = layout.process_file(process.pid)
    if file != expected:
        raise ImageError(file, "pid", f"{process.pid} does not match the file name (expected {expected})")
    _check_counts(process, file)
    _check_vmas(process.vmas, file)
    _check_page_runs(process, file, sizes)
    _check_mm(process, file)
    _check_creds(process, file)
    _check_fds(process, file)
    _check_threads(process, file, sizes, inventory.xstate_size)
    _check_vdso(process, file, inventory, sizes)


def _check_counts(process: Process, file: str) -> None:
    for name, count in (("sigactions", NSIG), ("rlimits", NR_RLIMITS), ("itimers", NR_ITIMERS)):
        got = len(getattr(process, name))
        if got != count:
            raise ImageError(file, name, f"expected {count} entries, got {got}")
    for index, limit in enumerate(process.rlimits):
        if limit.cur > limit.max:
            raise ImageError(file, f"rlimits[{index}].cur", f"{limit.cur} exceeds max {limit.max}")
    for index, action in enumerate(process.sigactions):
        for name in ("handler", "restorer"):
            if getattr(action, name) >= TASK_SIZE:
                raise ImageError(file, f"sigactions[{index}].{name}", f"{getattr(action, name):#x} is not a user address")
    _check_siginfos(process.shared_pending, file, "shared_pending")
    if process.umask > 0o777:
        raise ImageError(file, "umask", f"{process.umask:#o} is not a umask")
    for name in ("cwd", "root"):
        if not getattr(process, name).startswith("/"):
            raise ImageError(file, name, "not an absolute path")


def _check_siginfos(siginfos: Iterable[bytes], file: str, name: str) -> None:
    for index, info in enumerate(siginfos):
        if len(info) != SIGINFO_SIZE:
            raise ImageError(file, f"{name}[{index}]", f"siginfo of {len(info)} bytes, expected {SIGINFO_SIZE}")


def _check_vmas(vmas: tuple[Vma, ...], file: str) -> None:
    previous_end = 0
    for index, vma in enumerate(vmas):
        field = f"vmas[{index}]"
        for name in ("start", "end", "offset"):
            if getattr(vma, name) % PAGE_SIZE:
                raise ImageError(file, f"{field}.{name}", f"{getattr(vma, name):#x} is not page-aligned")
        if vma.start >= vma.end:
            raise ImageError(file, f"{field}.end", f"{vma.end:#x} is not above start {vma.start:#x}")
        if vma.end > TASK_SIZE:
            raise ImageError(file, f"{field}.end", f"{vma.end:#x} is beyond the user address space "
                                                   f"(TASK_SIZE {TASK_SIZE:#x})")
        if vma.start < previous_end:
            raise ImageError(file, f"{field}.start", f"{vma.start:#x} overlaps or precedes the previous VMA "
                                                     f"(ending at {previous_end:#x})")
        if vma.prot & ~PROT_MASK:
            raise ImageError(file, f"{field}.prot", f"{vma.prot:#x} has bits beyond PROT_READ|WRITE|EXEC")
        if vma.kind is VmaKind.FILE and not (vma.path or "").startswith("/"):
            raise ImageError(file, f"{field}.path", "a file mapping needs an absolute path")
        _check_advice(vma, file, field)
        previous_end = vma.end


def _check_advice(vma: Vma, file: str, field: str) -> None:
    # The codec has refused names that are not a VmaAdvice; what is left is the list's form.
    if vma.advice and vma.kind in KERNEL_MAPPING_KINDS:
        raise ImageError(file, f"{field}.advice", f"a {vma.kind.value} mapping is the kernel's: "
                                                  "restore sets no advice on it")
    if vma.advice != tuple(a for a in VmaAdvice if a in vma.advice):
        raise ImageError(file, f"{field}.advice", "expected each advice once, in the order "
                                                  f"{', '.join(a.value for a in VmaAdvice)}")


def _check_page_runs(process: Process, file: str, sizes: Mapping[str, int]) -> None:
    pages = layout.pages_file(process.pid)
    if pages not in sizes:
        raise ImageError(layout.INVENTORY, "files", f"{pages} (the pages of {file}) is not listed")
    vmas = process.vmas
    vma_index = 0
    offset = 0
    previous_end = 0
    for index, run in enumerate(process.page_runs):
        field = f"page_runs[{index}]"
        if run.vaddr % PAGE_SIZE:
            raise ImageError(file, f"{field}.vaddr", f"{run.vaddr:#x} is not page-aligned")
        if run.nr_pages == 0:
            raise ImageError(file, f"{field}.nr_pages", "a run holds at least one page")
        if run.vaddr < previous_end:
            raise ImageError(file, f"{field}.vaddr", f"{run.vaddr:#x} overlaps or precedes the previous run "
                                                     f"(ending at {previous_end:#x})")
        if run.offset != offset:
            raise ImageError(file, f"{field}.offset", f"{run.offset} is not where the previous run ends ({offset})")
        end = run.vaddr + run.size
        # Runs and VMAs are both sorted, so one forward walk finds each run's VMA.
        while vma_index < len(vmas) and vmas[vma_index].end <= run.vaddr:
            vma_index += 1
        if vma_index == len(vmas) or not vmas[vma_index].start <= run.vaddr or end > vmas[vma_index].end:
            raise ImageError(file, field, f"{run.vaddr:#x}..{end:#x} is not inside one VMA")
        if vmas[vma_index].kind in KERNEL_MAPPING_KINDS:
            raise ImageError(file, field, f"pages inside {vmas[vma_index].kind.value} (vmas[{vma_index}]) "
                                          "belong to the kernel and are not restored from the image")
        offset += run.size
        if offset > sizes[pages]:
            raise ImageError(file, f"{field}.offset", f"run ends at byte {offset}, beyond {pages} "
                                                      f"({sizes[pages]} bytes)")
        previous_end = end
    if offset != sizes[pages]:
        raise ImageError(pages, "", f"{sizes[pages]} bytes, but the page runs of {file} account for {offset}")


def _check_mm(process: Process, file: str) -> None:
    mm = process.mm
    for name in ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                 "arg_start", "arg_end", "env_start", "env_end"):
        if getattr(mm, name) >= TASK_SIZE:
            raise ImageError(file, f"mm.{name}", f"{getattr(mm, name):#x} is not a user address")
    for low, high in (("start_code", "end_code"), ("start_data", "end_data"), ("start_brk", "brk"),
                      ("arg_start", "arg_end"), ("env_start", "env_end")):
        if getattr(mm, low) > getattr(mm, high):
            raise ImageError(file, f"mm.{high}", f"{getattr(mm, high):#x} is below {low} {getattr(mm, low):#x}")
    if len(mm.auxv) % 2 or mm.auxv[-2:] != (0, 0):
        raise ImageError(file, "mm.auxv", "expected (type, value) pairs ending with AT_NULL")
    if not mm.exe.startswith("/"):
        raise ImageError(file, "mm.exe", "not an absolute path")


def _check_creds(process: Process, file: str) -> None:
    creds = process.creds
    for name in ("uids", "gids", "groups"):
        for index, value in enumerate(getattr(creds, name)):
            if value > U32_MAX:
                raise ImageError(file, f"creds.{name}[{index}]", f"{value} is not a 32-bit id")


def _check_fds(process: Process, file: str) -> None:
    seen = set()
    for index, fd in enumerate(process.fds):
        if fd.fd > 0x7FFFFFFF:
            raise ImageError(file, f"fds[{index}].fd", f"{fd.fd} is not a descriptor number")
        if fd.fd in seen:
            raise ImageError(file, f"fds[{index}].fd", f"descriptor {fd.fd} appears twice")
        seen.add(fd.fd)
        if fd.kind is not FdKind.INHERIT and not fd.path.startswith("/"):
            raise ImageError(file, f"fds[{index}].path", f"a {fd.kind.value} descriptor needs an absolute path")


def _check_threads(process: Process, file: str, sizes: Mapping[str, int], xstate_size: int) -> None:
    if not process.threads:
        raise ImageError(file, "threads", "a process has at least one thread")
    if process.threads[0].tid != process.pid:
        raise ImageError(file, "threads[0].tid", f"{process.threads[0].tid} is not the leader (pid {process.pid})")
    seen = set()
    for index, thread in enumerate(process.threads):
        field = f"threads[{index}]"
        if thread.tid in seen:
            raise ImageError(file, f"{field}.tid", f"thread {thread.tid} appears twice")
        seen.add(thread.tid)
        _check_thread(thread, file, field)
        xstate = layout.xstate_file(thread.tid)
        if xstate not in sizes:
            raise ImageError(layout.INVENTORY, "files", f"{xstate} (the xstate of {file} {field}) is not listed")
        if sizes[xstate] != xstate_size:
            raise ImageError(xstate, "", f"{sizes[xstate]} bytes, but inventory.json xstate_size is {xstate_size}")


def _check_thread(thread: ThreadCore, file: str, field: str) -> None:
    regs = thread.regs
    for name in ("rip", "rsp", "fs_base", "gs_base"):
        if getattr(regs, name) >= TASK_SIZE:
            raise ImageError(file, f"{field}.regs.{name}", f"{getattr(regs, name):#x} is not a user address")
    _check_siginfos(thread.pending, file, f"{field}.pending")
    if thread.altstack.sp + thread.altstack.size > TASK_SIZE:
        raise ImageError(file, f"{field}.altstack", "the alternate signal stack is not in the user address space")
    rseq = thread.rseq
    if rseq is None:
        return
    if rseq.address + rseq.size > TASK_SIZE or rseq.address == 0:
        raise ImageError(file, f"{field}.rseq.address", f"{rseq.address:#x} is not a user address")
    if rseq.signature > U32_MAX:
        raise ImageError(file, f"{field}.rseq.signature", f"{rseq.signature:#x} is not a 32-bit signature")
    if rseq.case is RseqCase.NO_RESTART and (rseq.cs is None or rseq.rseq_cs == 0):
        raise ImageError(file, f"{field}.rseq.cs", "the no_restart case needs the saved rseq_cs and its descriptor")


def _check_vdso(process: Process, file: str, inventory: Inventory, sizes: Mapping[str, int]) -> None:
    vdso_name = layout.vdso_file(process.pid)
    vdso = process.vdso
    if vdso is None:
        if vdso_name in sizes:
            raise ImageError(layout.INVENTORY, f"files[{vdso_name!r}]", f"listed, but {file} has no vdso")
        return
    if vdso_name not in sizes:
        raise ImageError(layout.INVENTORY, "files", f"{vdso_name} (the vdso of {file}) is not listed")
    if sizes[vdso_name] != vdso.vdso_size:
        raise ImageError(vdso_name, "", f"{sizes[vdso_name]} bytes, but {file} vdso.vdso_size is {vdso.vdso_size}")
    if inventory.files[vdso_name] != vdso.sha256:
        raise ImageError(file, "vdso.sha256", f"{vdso.sha256} is not the digest of {vdso_name}")
    _check_special_vma(process.vmas, file, "vdso", VmaKind.VDSO, vdso.vdso_start, vdso.vdso_size)
    if vdso.vvar_start is not None:
        _check_special_vma(process.vmas, file, "vvar", VmaKind.VVAR, vdso.vvar_start, vdso.vvar_size)
    if vdso.vvar_vclock_start is not None:
        _check_special_vma(process.vmas, file, "vvar_vclock", VmaKind.VVAR_VCLOCK, vdso.vvar_vclock_start,
                           vdso.vvar_vclock_size)
    _check_vdso_symbols(vdso, file)


def _check_special_vma(vmas: tuple[Vma, ...], file: str, name: str, kind: VmaKind, start: int, size: int) -> None:
    if not any(v.kind is kind and v.start == start and v.size == size for v in vmas):
        raise ImageError(file, f"vdso.{name}_start", f"no {kind.value} VMA at {start:#x} of {size} bytes in vmas")


def _check_vdso_symbols(vdso: VdsoInfo, file: str) -> None:
    for index, symbol in enumerate(vdso.symbols):
        if symbol.offset + symbol.size > vdso.vdso_size:
            raise ImageError(file, f"vdso.symbols[{index}]", f"{symbol.name} lies beyond the vDSO's {vdso.vdso_size} bytes")


def check_files_claimed(inventory: Inventory, processes: Iterable[Process]) -> None:
    """Every file the inventory lists belongs to one of the processes (nothing unexplained is restored)."""
    claimed = set()
    for process in processes:
        claimed.add(layout.process_file(process.pid))
        claimed.add(layout.pages_file(process.pid))
        claimed.update(layout.xstate_file(thread.tid) for thread in process.threads)
        if process.vdso is not None:
            claimed.add(layout.vdso_file(process.pid))
    for name in sorted(inventory.files):
        if name not in claimed:
            raise ImageError(layout.INVENTORY, f"files[{name!r}]", "belongs to no process of the image")
