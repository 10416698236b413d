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

import stat
from collections.abc import Iterable, Mapping

from runtime.errors import ImageError, shorten
from runtime.images import names as layout, sessions
from runtime.images.model import (KERNEL_MAPPING_KINDS, NR_ITIMERS, NR_RLIMITS, NSIG, PAGE_SIZE, TASK_SIZE,
                                  TIMER_CLOCKS, TIMER_NOTIFY, FdKind, FileEntry, Inventory, Process, RseqCase,
                                  SharedMemory, ThreadCore, Tree, UnixSocket, VdsoInfo, Vma, VmaAdvice, VmaKind)

SIGINFO_SIZE = 128
PROT_MASK = 0x7  # PROT_READ | PROT_WRITE | PROT_EXEC
PROT_WRITE = 0x2
U32_MAX = (1 << 32) - 1
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling for kernel.pid_max on 64-bit (include/linux/threads.h)
OFF_MAX = (1 << 63) - 1  # off_t: file offsets and positions
PERSONALITY_QUERY = 0xFFFFFFFF  # personality(0xffffffff) reads, never sets
SUID_DUMP_ROOT = 2  # the highest PR_GET_DUMPABLE value
USEC_PER_SEC = 1_000_000
NSEC_PER_SEC = 1_000_000_000
INT_MAX = (1 << 31) - 1
SIGEV_NONE, SIGEV_THREAD_ID = 1, 4
# The kernel keeps at most AT_VECTOR_SIZE auxv words (2 * (2 + 22 + 1) = 50 on x86_64 6.x)
# and PR_SET_MM_MAP refuses more; the bound leaves room for a newer kernel's few more.
AUXV_WORDS_MAX = 64
# The selectors of 64-bit user mode (arch/x86/include/asm/segment.h): rt_sigreturn into
# other ones faults, and the process would die after a restore that said it succeeded.
USER_CS = 0x33
USER_DS = 0x2B
RSEQ_MIN_SIZE = 32  # ORIG_RSEQ_SIZE: the kernel refuses a smaller registration
# The open flags a file keeps after open() (fdinfo's flags): the kernel clears O_CREAT,
# O_EXCL, O_NOCTTY and O_TRUNC in do_dentry_open, and a file opened with O_TMPFILE has no
# name the dump could record. Anything else a reopen would act on, so it is refused.
# The kernel's values (asm-generic/fcntl.h): Python's os.O_LARGEFILE is glibc's 0 on x86_64.
O_KEPT = (0o3  # O_ACCMODE
          | 0o2000 | 0o4000 | 0o10000 | 0o20000  # O_APPEND, O_NONBLOCK, O_DSYNC, FASYNC
          | 0o40000 | 0o100000 | 0o200000 | 0o400000  # O_DIRECT, O_LARGEFILE, O_DIRECTORY, O_NOFOLLOW
          | 0o1000000 | 0o2000000 | 0o4000000 | 0o10000000)  # O_NOATIME, O_CLOEXEC, __O_SYNC, O_PATH
# The legacy 512-byte area plus the 64-byte xsave header is the least an xsave area holds;
# no CPU's user area is near 64 KiB (AMX, the largest, makes it about 11 KiB).
XSTATE_MIN = 576
XSTATE_MAX = 64 * 1024
UNIX_SOCKET_TYPES = (1, 2, 5)  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
PIPE_SIZE_MAX = 1 << 31  # the kernel's ceiling for a pipe's capacity (F_SETPIPE_SZ takes an int)


def check_inventory(inventory: Inventory) -> None:
    """The inventory's own fields, before any other file is trusted."""
    file = layout.INVENTORY
    if inventory.format_version != layout.FORMAT_VERSION:
        raise ImageError(file, "format_version",
                         f"unsupported version {inventory.format_version} (this tool reads {layout.FORMAT_VERSION})")
    if inventory.tool != layout.TOOL:
        raise ImageError(file, "tool", f"written by {shorten(repr(inventory.tool))}, not {layout.TOOL}")
    if not XSTATE_MIN <= inventory.xstate_size <= XSTATE_MAX:
        raise ImageError(file, "xstate_size", f"{inventory.xstate_size} is outside {XSTATE_MIN}..{XSTATE_MAX}")
    for name in inventory.files:
        if layout.parse_name(name) is None:
            raise ImageError(file, f"files[{shorten(repr(name))}]", "not a file name of this image format")
    if layout.process_file(inventory.root_pid) not in inventory.files:
        raise ImageError(file, "root_pid", f"no {layout.process_file(inventory.root_pid)} in files")


def check_process(process: Process, file: str, inventory: Inventory, sizes: Mapping[str, int],
                  mmap_min_addr: int, nr_open: int, shared_files: frozenset[int] = frozenset()) -> None:
    """All of a process's invariants; sizes: byte size of each file the inventory lists.

    mmap_min_addr and nr_open are this machine's (images/host.py): no VMA
    below the one, no descriptor number at or above the other. shared_files:
    the ids of the tree's shared file entries, which its fds may point at too.
    """
    expected = layout.process_file(process.pid)
    if file != expected:
        raise ImageError(file, "pid", f"{process.pid} does not match the file name (expected {expected})")
    for name in ("pid", "ppid", "pgid", "sid"):
        if getattr(process, name) >= PID_MAX_LIMIT:
            raise ImageError(file, name, f"{getattr(process, name)} is not a process id (below {PID_MAX_LIMIT})")
    _check_counts(process, file)
    if process.controls.pdeath_signal > NSIG:
        raise ImageError(file, "controls.pdeath_signal", f"{process.controls.pdeath_signal} is not a signal "
                                                         f"(0 or 1..{NSIG})")
    _check_vmas(process.vmas, file, mmap_min_addr)
    _check_page_runs(process, file, sizes)
    _check_mm(process, file)
    _check_creds(process, file)
    _check_fds(process, file, nr_open, shared_files)
    _check_threads(process, file, sizes, inventory.xstate_size)
    _check_vdso(process, file, sizes)


def _check_posix_timers(process: Process, file: str) -> None:
    """What timer_create and timer_settime would refuse, or would make another timer of."""
    ids = [timer.id for timer in process.posix_timers]
    if ids != sorted(set(ids)):
        raise ImageError(file, "posix_timers", "ids are not ascending and unique")
    tids = {thread.tid for thread in process.threads}
    for index, timer in enumerate(process.posix_timers):
        field = f"posix_timers[{index}]"
        if timer.id > INT_MAX:
            raise ImageError(file, f"{field}.id", f"{timer.id} is not a timer id")
        if timer.clock not in TIMER_CLOCKS:
            raise ImageError(file, f"{field}.clock", f"{timer.clock} is not a clock a process's own timer counts")
        if timer.notify not in TIMER_NOTIFY:
            raise ImageError(file, f"{field}.notify", f"{timer.notify} is not a sigev_notify value")
        if not 1 <= timer.signal <= NSIG and timer.notify != SIGEV_NONE:
            raise ImageError(file, f"{field}.signal", f"{timer.signal} is not a signal")
        if timer.notify == SIGEV_THREAD_ID and timer.tid not in tids:
            raise ImageError(file, f"{field}.tid", f"{timer.tid} is not one of the process's threads")
        if timer.sigev_value >= 1 << 64:
            raise ImageError(file, f"{field}.sigev_value", f"{timer.sigev_value:#x} does not fit 64 bits")
        _check_timer_times(timer, file, field, "nsec", NSEC_PER_SEC)


def _check_timer_times(timer, file: str, field: str, fraction: str, per_second: int) -> None:
    """A timer's interval and value as setitimer or timer_settime take them: seconds in a time_t, and a fraction
    (usec or nsec) below one second."""
    for part in ("interval", "value"):
        if getattr(timer, f"{part}_{fraction}") >= per_second:
            raise ImageError(file, f"{field}.{part}_{fraction}",
                             f"{getattr(timer, f'{part}_{fraction}')} is not below one second")
        if getattr(timer, f"{part}_sec") > OFF_MAX:
            raise ImageError(file, f"{field}.{part}_sec", f"{getattr(timer, f'{part}_sec')} does not fit a time_t")


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
    for index, timer in enumerate(process.itimers):
        _check_timer_times(timer, file, f"itimers[{index}]", "usec", USEC_PER_SEC)
    _check_posix_timers(process, file)
    _check_siginfos(process.shared_pending, file, "shared_pending")
    if process.personality >= PERSONALITY_QUERY:
        raise ImageError(file, "personality", f"{process.personality:#x} is not a personality")
    if process.dumpable > SUID_DUMP_ROOT:
        raise ImageError(file, "dumpable", f"{process.dumpable} is not a PR_GET_DUMPABLE value (0..2)")
    if process.umask > 0o777:
        raise ImageError(file, "umask", f"{process.umask:#o} is not a umask")
    for name in ("cwd", "root"):
        if not getattr(process, name).startswith("/"):
            raise ImageError(file, name, "not an absolute path")


def _check_siginfos(siginfos: Iterable[bytes], file: str, name: str) -> None:
    for index, info in enumerate(siginfos):
        if len(info) != SIGINFO_SIZE:
            raise ImageError(file, f"{name}[{index}]", f"siginfo of {len(info)} bytes, expected {SIGINFO_SIZE}")
        signo = int.from_bytes(info[:4], "little")
        if not 1 <= signo <= NSIG:
            raise ImageError(file, f"{name}[{index}]", f"signal number {signo} is outside 1..{NSIG}")


def _check_vmas(vmas: tuple[Vma, ...], file: str, mmap_min_addr: int) -> None:
    previous_end = 0
    for index, vma in enumerate(vmas):
        field = f"vmas[{index}]"
        for name in ("start", "end", "offset"):
            if getattr(vma, name) % PAGE_SIZE:
                raise ImageError(file, f"{field}.{name}", f"{getattr(vma, name):#x} is not page-aligned")
        if vma.start >= vma.end:
            raise ImageError(file, f"{field}.end", f"{vma.end:#x} is not above start {vma.start:#x}")
        if vma.start < mmap_min_addr:
            raise ImageError(file, f"{field}.start", f"{vma.start:#x} is below vm.mmap_min_addr ({mmap_min_addr:#x}): "
                                                     "no process may map there")
        if vma.offset + vma.size > OFF_MAX:
            raise ImageError(file, f"{field}.offset", f"{vma.offset:#x} puts the mapping beyond any file offset")
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
        if vma.shmem is not None and not (vma.kind is VmaKind.FILE
                                          or vma.kind in (VmaKind.ANON, VmaKind.SYSV) and vma.shared):
            raise ImageError(file, f"{field}.shmem", f"a {vma.kind.value} mapping maps no shared memory object")
        if vma.kind is VmaKind.SYSV and (vma.shmem is None or vma.shmem > INT_MAX or vma.growsdown):
            raise ImageError(file, f"{field}.shmem", "a SysV attach is a shared mapping of a segment's id")
        if vma.sysv_readonly and (vma.kind is not VmaKind.SYSV or vma.prot & PROT_WRITE):
            raise ImageError(file, f"{field}.sysv_readonly", "only a SysV attach is read-only, and never writable")
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
        if vmas[vma_index].kind is VmaKind.FILE and vmas[vma_index].shared:
            # Writing them would write into the file on disk: its contents are the file's own.
            raise ImageError(file, field, f"pages inside a shared file mapping (vmas[{vma_index}]): "
                                          "its contents come from the file, a restore never writes them")
        if vmas[vma_index].shmem is not None and vmas[vma_index].shared:
            raise ImageError(file, field, f"pages inside a shared memory mapping (vmas[{vma_index}]): "
                                          f"they are the object's, in {layout.shmem_file(vmas[vma_index].shmem)}")
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
    if len(mm.auxv) > AUXV_WORDS_MAX:
        raise ImageError(file, "mm.auxv", f"{len(mm.auxv)} words, more than the kernel keeps ({AUXV_WORDS_MAX})")
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


def _check_file_entries(entries: tuple[FileEntry, ...], file: str, taken: frozenset[int] = frozenset()) -> set[int]:
    """The entries' own fields; their ids, which must be unique and not among taken."""
    ids = set()
    for index, entry in enumerate(entries):
        if entry.id in ids or entry.id in taken:
            raise ImageError(file, f"files[{index}].id", f"file {entry.id} appears twice")
        ids.add(entry.id)
        if entry.flags & ~O_KEPT:
            raise ImageError(file, f"files[{index}].flags",
                             f"{entry.flags:#o} has bits {entry.flags & ~O_KEPT:#o}, not flags an open file keeps "
                             "(O_CREAT, O_TRUNC, O_TMPFILE ...)")
        if entry.pos > OFF_MAX:
            raise ImageError(file, f"files[{index}].pos", f"{entry.pos} is beyond any file offset")
        if entry.node is not None and not entry.node.path.startswith("/"):
            raise ImageError(file, f"files[{index}].node.path", "not an absolute path")
        if entry.node is not None and entry.node.mode > U32_MAX:
            raise ImageError(file, f"files[{index}].node.mode", f"{entry.node.mode:#o} is not a file mode")
    return ids


def _check_fds(process: Process, file: str, nr_open: int, shared_files: frozenset[int]) -> None:
    """The fd table's shape: slots, file entries (its own and the tree's shared ones) and the links between them.

    Each kind's own checks (which path, which file type) are runtime/files/'s
    (files.table.check, which the restore runs before it plans anything): this
    module is below files/ in the data flow and knows no kinds.
    """
    ids = _check_file_entries(process.files, file, shared_files) | shared_files
    seen = set()
    used = set()
    for index, slot in enumerate(process.fds):
        if slot.fd >= nr_open:
            raise ImageError(file, f"fds[{index}].fd",
                             f"{slot.fd} is not a descriptor number (fs.nr_open is {nr_open})")
        if slot.fd in seen:
            raise ImageError(file, f"fds[{index}].fd", f"descriptor {slot.fd} appears twice")
        seen.add(slot.fd)
        if slot.file_id not in ids:
            raise ImageError(file, f"fds[{index}].file_id", f"{slot.file_id} is not the id of a file of the image")
        used.add(slot.file_id)
    for index, entry in enumerate(process.files):
        if entry.id not in used:
            raise ImageError(file, f"files[{index}].id", f"file {entry.id} is held by no descriptor")


def _check_threads(process: Process, file: str, sizes: Mapping[str, int], xstate_size: int) -> None:
    if not process.threads:
        raise ImageError(file, "threads", "a process has at least one thread")
    if process.leader_exited:
        if any(thread.tid == process.pid for thread in process.threads):
            raise ImageError(file, "threads", f"the leader {process.pid} exited, yet a thread has its id")
    elif process.threads[0].tid != process.pid:
        raise ImageError(file, "threads[0].tid", f"{process.threads[0].tid} is not the leader (pid {process.pid})")
    seen = set()
    for index, thread in enumerate(process.threads):
        field = f"threads[{index}]"
        if thread.tid >= PID_MAX_LIMIT:
            raise ImageError(file, f"{field}.tid", f"{thread.tid} is not a thread id (below {PID_MAX_LIMIT})")
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
    for name, selector in (("cs", USER_CS), ("ss", USER_DS)):
        if getattr(regs, name) != selector:
            raise ImageError(file, f"{field}.regs.{name}", f"{getattr(regs, name):#x} is not the 64-bit user "
                                                           f"selector {selector:#x}")
    _check_siginfos(thread.pending, file, f"{field}.pending")
    if thread.altstack.sp + thread.altstack.size > TASK_SIZE:
        raise ImageError(file, f"{field}.altstack", "the alternate signal stack is not in the user address space")
    if thread.altstack.flags > U32_MAX:
        raise ImageError(file, f"{field}.altstack.flags", f"{thread.altstack.flags:#x} is not a 32-bit flag set")
    rseq = thread.rseq
    if rseq is None:
        return
    if rseq.address + rseq.size > TASK_SIZE or rseq.address == 0:
        raise ImageError(file, f"{field}.rseq.address", f"{rseq.address:#x} is not a user address")
    if not RSEQ_MIN_SIZE <= rseq.size <= U32_MAX:
        raise ImageError(file, f"{field}.rseq.size", f"{rseq.size} is not an rseq area length")
    if rseq.signature > U32_MAX:
        raise ImageError(file, f"{field}.rseq.signature", f"{rseq.signature:#x} is not a 32-bit signature")
    if rseq.case is RseqCase.NO_RESTART and (rseq.cs is None or rseq.rseq_cs == 0):
        raise ImageError(file, f"{field}.rseq.cs", "the no_restart case needs the saved rseq_cs and its descriptor")


def _check_vdso(process: Process, file: str, sizes: Mapping[str, int]) -> None:
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
            raise ImageError(file, f"vdso.symbols[{index}]",
                             f"{shorten(symbol.name)} lies beyond the vDSO's {vdso.vdso_size} bytes")


def check_tree(tree: Tree, processes: Mapping[int, Process], inventory: Inventory, sizes: Mapping[str, int]) -> None:
    """The tree's shape and its links to the process records: what a restore creates in which order.

    processes: the decoded process records by pid. Each check here is one a
    restore relies on: a parent created before its child, a session created
    by its leader or inherited from the parent, a group whose leader exists.
    """
    file = layout.TREE
    if not tree.processes:
        raise ImageError(file, "processes", "a tree has at least its root")
    root = tree.processes[0]
    if root.pid != inventory.root_pid:
        raise ImageError(file, "processes[0].pid", f"{root.pid} is not the inventory's root_pid {inventory.root_pid}")
    if root.zombie_status is not None:
        raise ImageError(file, "processes[0].zombie_status", "the root is no zombie")
    nodes = {}
    for index, node in enumerate(tree.processes):
        field = f"processes[{index}]"
        for name in ("pid", "ppid", "pgid", "sid"):
            if getattr(node, name) >= PID_MAX_LIMIT:
                raise ImageError(file, f"{field}.{name}", f"{getattr(node, name)} is not a process id")
        if node.pid in nodes:
            raise ImageError(file, f"{field}.pid", f"process {node.pid} appears twice")
        if index and (node.ppid not in nodes or nodes[node.ppid].zombie_status is not None):
            raise ImageError(file, f"{field}.ppid", f"{node.ppid} is no live process listed before {node.pid}")
        nodes[node.pid] = node
        _check_tree_process(node, processes.get(node.pid), file, field)
    _check_sessions(tree, processes[root.pid].shell_job, file)
    for pid in processes:
        if pid not in nodes:
            raise ImageError(layout.process_file(pid), "pid", f"process {pid} is not in {file}")
    _check_shared_memory(tree.shared_memory, processes, sizes, file)
    owners: dict[int, int] = {}  # file id -> the process whose record holds that entry
    for pid, process in processes.items():
        for index, entry in enumerate(process.files):
            if owners.setdefault(entry.id, pid) != pid:
                raise ImageError(layout.process_file(pid), f"files[{index}].id",
                                 f"file {entry.id} is also {layout.process_file(owners[entry.id])}'s: ids are unique "
                                 "in the image (an open file several processes hold is the tree's)")
    _check_file_entries(tree.files, file, frozenset(owners))
    used = {slot.file_id for process in processes.values() for slot in process.fds}
    for index, entry in enumerate(tree.files):
        if entry.id not in used:
            raise ImageError(file, f"files[{index}].id", f"file {entry.id} is held by no descriptor")
    # Every file entry of the image: (the file it is in, its index there, the entry).
    entries = [(name, index, entry) for name, held in
               [(file, tree.files)] + [(layout.process_file(pid), p.files) for pid, p in processes.items()]
               for index, entry in enumerate(held)]
    _check_pipes(tree, entries, file)
    _check_sockets(tree, entries, file)
    memfds = {obj.id for obj in tree.shared_memory if obj.memfd}
    deleted = {obj.id for obj in tree.shared_memory if obj.path is not None and not obj.memfd}
    for name, index, entry in entries:
        wanted = memfds if entry.kind is FdKind.MEMFD else deleted
        if entry.shmem is not None and entry.shmem not in wanted:
            raise ImageError(name, f"files[{index}].shmem", f"{entry.shmem} is no {entry.kind.value} file of {file}")


def _check_sockets(tree: Tree, entries: list[tuple[str, int, FileEntry]], file: str) -> None:
    """Each socket once, of a type a restore makes, paired with a peer that names it back, and held."""
    _check_held(entries, file, tree.sockets, "socket", "sockets")
    by_id = {sock.id: sock for sock in tree.sockets}
    waited: set[int] = set()  # the clients seen waiting on a listener so far
    for index, sock in enumerate(tree.sockets):
        field = f"sockets[{index}]"
        if sock.type not in UNIX_SOCKET_TYPES:
            raise ImageError(file, f"{field}.type", f"{sock.type} is not SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET")
        if sock.shutdown > 3:
            raise ImageError(file, f"{field}.shutdown", f"{sock.shutdown} is not a shutdown mask (0..3)")
        if sock.name and not (sock.name.startswith(b"\0") or sock.name.startswith(b"/")) or len(sock.name) > 108:
            raise ImageError(file, f"{field}.name", "a socket is bound to an absolute path or an abstract name, "
                                                    "of at most 108 bytes")
        accepted_from = by_id.get(sock.listener)
        if sock.listener and (accepted_from is None or not accepted_from.listening or not sock.peer):
            raise ImageError(file, f"{field}.listener", f"{sock.listener} is no listening socket of the tree, or "
                                                        "the connection has no peer")
        if sock.listening and (sock.type == 2 or not sock.name or sock.peer):
            raise ImageError(file, f"{field}.listening", "only a bound, unconnected stream or seqpacket socket "
                                                         "listens")
        peer = by_id.get(sock.peer) if sock.peer else None
        if sock.peer and (peer is None or peer.peer != sock.id or peer.type != sock.type):
            raise ImageError(file, f"{field}.peer", f"{sock.peer} is no socket of the tree paired with it")
        if sock.queue and peer is None and not (sock.type == 2 and sock.name):
            raise ImageError(file, f"{field}.queue", "a queue without a peer or a datagram socket's name to send it "
                                                     "again")
        if sock.external and (not sock.external.startswith((b"\0", b"/")) or len(sock.external) > 108
                              or sock.peer or sock.listening or sock.listener):
            raise ImageError(file, f"{field}.external", "the name it connects to again is an absolute path or an "
                                                        "abstract name of at most 108 bytes, of an unpaired socket")
        _check_waiting(sock, by_id, waited, file, field)


def _check_waiting(sock: UnixSocket, by_id: dict[int, UnixSocket], waited: set[int], file: str, field: str) -> None:
    """A listener's waiting connections: within its backlog, each an unnamed, unconnected client of its type once."""
    if sock.waiting and (not sock.listening or len(sock.waiting) > sock.backlog + 1):
        raise ImageError(file, f"{field}.waiting", "connections wait on a listening socket, at most its backlog + 1")
    for client_id in sock.waiting:
        client = by_id.get(client_id)
        if (client is None or client_id in waited or client.type != sock.type or client.peer or client.name
                or client.listening or client.listener or client.external or client.queue):
            raise ImageError(file, f"{field}.waiting", f"{client_id} is no unnamed, unpaired socket of the tree of "
                                                       "its type waiting on it alone")
        waited.add(client_id)


def _check_pipes(tree: Tree, entries: list[tuple[str, int, FileEntry]], file: str) -> None:
    """Each pipe once, its bytes within its capacity, and every pipe end naming one of them."""
    _check_held(entries, file, tree.pipes, "pipe", "pipes")
    for index, pipe in enumerate(tree.pipes):
        field = f"pipes[{index}]"
        if not PAGE_SIZE <= pipe.size <= PIPE_SIZE_MAX or pipe.size % PAGE_SIZE:
            raise ImageError(file, f"{field}.size", f"{pipe.size} is not a pipe's capacity (whole pages up to "
                                                    f"{PIPE_SIZE_MAX})")
        if len(pipe.data) > pipe.size:
            raise ImageError(file, f"{field}.data", f"{len(pipe.data)} bytes do not fit its {pipe.size}")
        if pipe.path is not None and not pipe.path.startswith("/"):
            raise ImageError(file, f"{field}.path", "a FIFO's path is absolute")
        if pipe.packets and (sum(pipe.packets) != len(pipe.data) or not all(0 < n <= PAGE_SIZE for n in pipe.packets)
                             or len(pipe.packets) > pipe.size // PAGE_SIZE):
            raise ImageError(file, f"{field}.packets", f"not the lengths of the packets of its {len(pipe.data)} bytes "
                                                       f"(each 1 to {PAGE_SIZE}, one per page of its capacity)")
        if pipe.external and (pipe.data or pipe.path is not None):
            raise ImageError(file, f"{field}.external", "an external pipe is no FIFO and has no bytes of the image")


def _check_held(entries: list[tuple[str, int, FileEntry]], file: str, objects: tuple, link: str, listed: str) -> None:
    """Objects of the tree (pipes, sockets) in ascending ids, every entry's link to one of them, each held."""
    previous = 0
    for index, obj in enumerate(objects):
        if obj.id <= previous:
            raise ImageError(file, f"{listed}[{index}].id", f"{obj.id} is not above the previous id")
        previous = obj.id
    ids = {obj.id for obj in objects}
    for name, index, entry in entries:
        if getattr(entry, link) is not None and getattr(entry, link) not in ids:
            raise ImageError(name, f"files[{index}].{link}", f"{getattr(entry, link)} is no {link} of {file}")
    held = {getattr(entry, link) for _, _, entry in entries}
    for index, obj in enumerate(objects):
        if obj.id not in held:
            raise ImageError(file, f"{listed}[{index}].id", f"{link} {obj.id} is held by no descriptor")


def _check_tree_process(node, process: Process | None, file: str, field: str) -> None:
    status = node.zombie_status
    if status is None:
        if process is None:
            raise ImageError(file, f"{field}.pid", f"no {layout.process_file(node.pid)} for live process {node.pid}")
        for name in ("ppid", "pgid", "sid"):
            if getattr(process, name) != getattr(node, name):
                raise ImageError(layout.process_file(node.pid), name, f"{getattr(process, name)} is not the "
                                                                      f"{file} {name} {getattr(node, name)}")
        return
    if process is not None:
        raise ImageError(file, f"{field}.zombie_status", f"process {node.pid} has a record: it is no zombie")
    # A wait status: an exit code in bits 8-15, or a signal in bits 0-6 (bit 7: it dumped core).
    exited_ok = status & 0x7F == 0 and status <= 0xFF00
    signalled_ok = 1 <= status & 0x7F <= NSIG and status <= 0xFF
    if not (exited_ok or signalled_ok):
        raise ImageError(file, f"{field}.zombie_status", f"{status:#x} is not the wait status of a dead process")


def _check_sessions(tree: Tree, shell_job: bool, file: str) -> None:
    """The sessions and groups a restore can make again (images/sessions.py), with stand-ins where leaders are gone."""
    try:
        sessions.stand_ins(tree.processes, shell_job)
    except sessions.ShapeError as exc:
        index = next(i for i, node in enumerate(tree.processes) if node.pid == exc.pid)
        raise ImageError(file, f"processes[{index}]", exc.reason) from None


def _check_shared_memory(objects: tuple[SharedMemory, ...], processes: Mapping[int, Process],
                         sizes: Mapping[str, int], file: str) -> None:
    known: dict[int, SharedMemory] = {}
    for index, obj in enumerate(objects):
        field = f"shared_memory[{index}]"
        if known and obj.id <= max(known):
            raise ImageError(file, f"{field}.id", f"{obj.id} is not above the previous id")
        # An anonymous object is whole pages; a deleted file or a SysV segment has the size it was given.
        if obj.size == 0 or obj.size > OFF_MAX or (obj.path is None and obj.sysv is None and obj.size % PAGE_SIZE):
            raise ImageError(file, f"{field}.size", f"{obj.size} is not the size of a shared memory object")
        if obj.memfd and not (obj.path or "").startswith("/memfd:"):
            raise ImageError(file, f"{field}.path", "a memfd's path is /memfd:NAME")
        if obj.path is not None and (not obj.path.startswith("/") or not stat.S_ISREG(obj.mode)):
            raise ImageError(file, f"{field}.path", "a deleted file's object needs an absolute path and a regular "
                                                    "file's mode")
        if obj.sysv is not None:
            _check_sysv_segment(obj, file, field)
        data = layout.shmem_file(obj.id)
        if data not in sizes:
            raise ImageError(layout.INVENTORY, "files", f"{data} (the data of {file} {field}) is not listed")
        offset = previous_end = 0
        for number, extent in enumerate(obj.extents):
            where = f"{field}.extents[{number}]"
            ends_object = extent.start + extent.length == obj.size
            if extent.start % PAGE_SIZE or (extent.length % PAGE_SIZE and not ends_object) or not extent.length:
                raise ImageError(file, where, "not a run of whole pages (or up to the object's end)")
            if extent.start < previous_end or extent.start + extent.length > obj.size:
                raise ImageError(file, where, f"{extent.start:#x}+{extent.length:#x} overlaps the previous extent "
                                              f"or ends beyond the object ({obj.size:#x} bytes)")
            if extent.offset != offset:
                raise ImageError(file, f"{where}.offset", f"{extent.offset} is not where the previous extent ends "
                                                          f"({offset})")
            offset += extent.length
            previous_end = extent.start + extent.length
        if offset != sizes[data]:
            raise ImageError(data, "", f"{sizes[data]} bytes, but the extents of {file} {field} account for {offset}")
        known[obj.id] = obj
    for pid, process in processes.items():
        for index, vma in enumerate(process.vmas):
            if vma.shmem is None:
                continue
            obj = known.get(vma.shmem)
            if obj is None:
                raise ImageError(layout.process_file(pid), f"vmas[{index}].shmem",
                                 f"{vma.shmem} is no shared memory object of {file}")
            if (vma.kind is VmaKind.SYSV) != (obj.sysv is not None):
                raise ImageError(layout.process_file(pid), f"vmas[{index}].kind",
                                 f"object {obj.id} is {'a' if obj.sysv else 'no'} SysV segment, the mapping "
                                 f"{'is' if vma.kind is VmaKind.SYSV else 'is not'} a SysV attach")
            # A file's mapping may reach past its end; an attach maps its segment's last page whole.
            limit = obj.size + -obj.size % PAGE_SIZE if obj.sysv is not None else obj.size
            if obj.path is None and vma.offset + vma.size > limit:
                raise ImageError(layout.process_file(pid), f"vmas[{index}].offset",
                                 f"the mapping ends at byte {vma.offset + vma.size} of object {obj.id}, "
                                 f"beyond its {obj.size} bytes")
        _check_sysv_attaches(process, known, layout.process_file(pid))


def _check_sysv_segment(obj: SharedMemory, file: str, field: str) -> None:
    """What shmget and IPC_SET take: an int id, a 32-bit key and ids, permission bits only."""
    if obj.id > INT_MAX:
        raise ImageError(file, f"{field}.id", f"{obj.id} is not a SysV segment id")
    if obj.path is not None or obj.memfd or obj.seals:
        raise ImageError(file, f"{field}.sysv", "a SysV segment has no path, and is no memfd")
    if obj.mode & ~0o777:
        raise ImageError(file, f"{field}.mode", f"{obj.mode:o} has bits beyond a SysV segment's permissions (0777)")
    for name in ("key", "uid", "gid", "cuid", "cgid"):
        if getattr(obj.sysv, name) > U32_MAX:
            raise ImageError(file, f"{field}.sysv.{name}", f"{getattr(obj.sysv, name)} does not fit 32 bits")


def _check_sysv_attaches(process: Process, known: Mapping[int, SharedMemory], file: str) -> None:
    """Each attach is whole, as the restorer's one shmat maps it: VMAs one after the other, offset 0 to the end."""
    pending = None  # (segment id, where the attach's next VMA starts, that VMA's offset, the attach's end)
    for index, vma in enumerate(process.vmas):
        if pending is not None:
            if (vma.kind, vma.shmem, vma.start, vma.offset) != (VmaKind.SYSV, *pending[:3]):
                raise ImageError(file, f"vmas[{index}]", f"the attach of SysV segment {pending[0]} stops at "
                                                         f"{pending[1]:#x}, before the segment's end ({pending[3]:#x})")
        elif vma.kind is not VmaKind.SYSV:
            continue
        elif vma.offset:
            raise ImageError(file, f"vmas[{index}].offset", "a SysV attach starts at offset 0 of its segment")
        else:
            size = known[vma.shmem].size
            pending = (vma.shmem, vma.start, 0, vma.start + size + -size % PAGE_SIZE)
        pending = None if vma.end >= pending[3] else (vma.shmem, vma.end, vma.offset + vma.size, pending[3])
    if pending is not None:
        raise ImageError(file, "vmas", f"the attach of SysV segment {pending[0]} stops at {pending[1]:#x}, before "
                                       f"the segment's end ({pending[3]:#x})")


def check_files_claimed(inventory: Inventory, processes: Iterable[Process], tree: Tree) -> None:
    """Every file the inventory lists belongs to the tree or one of its processes (nothing unexplained is restored)."""
    claimed = {layout.TREE} | {layout.shmem_file(obj.id) for obj in tree.shared_memory}
    for process in processes:
        claimed.add(layout.process_file(process.pid))
        claimed.add(layout.pages_file(process.pid))
        claimed.update(layout.xstate_file(thread.tid) for thread in process.threads)
        if process.vdso is not None:
            claimed.add(layout.vdso_file(process.pid))
    for name in sorted(inventory.files):
        if name not in claimed:
            raise ImageError(layout.INVENTORY, f"files[{name!r}]", "belongs to no process of the image")
