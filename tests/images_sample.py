"""Test support for the image tests: a real image of a real process, and ways to spoil it.

Why: the image tests must check the writer and the loader against what a
dump really records, not hand-made numbers. `snapshot()` stops a `sleep`
under ptrace and reads its registers, xstate, rseq registration, VMAs,
present pages, vDSO and /proc facts with the runtime's own readers, and
`write_image()` writes them with the ImageWriter, page data read from
/proc/PID/mem into the file pages_file() gives, in vaddr order. The target is killed
and reaped by the fixture that made it, whatever happens.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.kernel import ptrace
from runtime.images.model import (NR_ITIMERS, NR_RLIMITS, NSIG, ITimer, MmFields, PageRun, Process, Registers,
                                  RLimit, Rseq, SigAction, SigAltStack, ThreadCore, Tree, TreeProcess, VdsoInfo,
                                  VmaKind)
from runtime.images.writer import ImageWriter
from runtime.kernel.procfs.auxv import read_auxv
from runtime.kernel.procfs.maps import VSYSCALL, read_mappings
from runtime.kernel.procfs.pagemap import scan
from runtime.kernel.procfs.stat import read_personality, read_stat
from runtime.kernel.procfs.status import read_status
from runtime.kernel.procfs.vdso import read_vdso
from runtime.task.controls import controls_from

# What the dump's parasite reads with PR_GET_* (only the task itself can): a `sleep` has the defaults.
SNAPSHOT_PRCTL = {"pdeath_sig": 0, "child_subreaper": 0, "timer_slack": 50_000, "thp_disable": 0, "tsc_mode": 1,
                  "mce_kill": 2, "mdwe": 0, "memory_merge": 0, "securebits": 0}


@dataclass(frozen=True)
class Snapshot:
    """What a dump of one stopped process gathers: its record plus the bytes that go beside it."""

    process: Process
    xstate: bytes
    vdso_image: bytes | None


def start_sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            start_new_session=True)


def stop_and_reap(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def image_of_a_sleep(directory: Path) -> Snapshot:
    """A `sleep` snapshotted and written to directory; the sleep is reaped whatever happens."""
    proc = start_sleeper()
    try:
        time.sleep(0.05)
        snap = snapshot(proc.pid)
        write_image(directory, snap)
        return snap
    finally:
        stop_and_reap(proc)


def snapshot(pid: int) -> Snapshot:
    """Seize pid, read what a dump records, and let it go again."""
    ptrace.seize(pid)
    try:
        ptrace.interrupt(pid)
        ptrace.wait(pid)
        regs = ptrace.get_regs(pid)
        xstate = ptrace.get_xstate(pid)
        rseq_conf = ptrace.get_rseq_configuration(pid)
        blocked = ptrace.get_sigmask(pid)
        return _build(pid, regs, xstate, rseq_conf, blocked)
    finally:
        ptrace.detach(pid)


def _build(pid, regs, xstate, rseq_conf, blocked) -> Snapshot:
    mappings = [m for m in read_mappings(pid) if m.name != VSYSCALL]
    vmas = tuple(m.vma() for m in mappings)
    runs = []
    offset = 0
    for vma in vmas:
        if vma.kind in (VmaKind.VDSO, VmaKind.VVAR, VmaKind.VVAR_VCLOCK) or vma.shared:
            continue
        for page_range in scan(pid, vma.start, vma.end):
            runs.append(PageRun(page_range.start, page_range.nr_pages, offset))
            offset += page_range.end - page_range.start
    vdso_info, vdso_image = _vdso(pid, vmas)
    stat = read_stat(pid)
    status = read_status(pid)
    limits = tuple(RLimit(*(v & (2**64 - 1) for v in resource.prlimit(pid, n))) for n in range(NR_RLIMITS))
    thread = ThreadCore(
        tid=pid,
        comm=stat.comm,
        in_syscall=None if regs.orig_rax >= 1 << 63 else regs.orig_rax,
        regs=Registers(**{name: getattr(regs, name) for name, _ in regs._fields_}),
        blocked=blocked,
        altstack=SigAltStack(0, 0, 2),
        clear_child_tid=0,
        rseq=Rseq(rseq_conf.address, rseq_conf.size, rseq_conf.signature) if rseq_conf.address else None,
    )
    process = Process(
        pid=pid, ppid=stat.ppid, pgid=stat.pgid, sid=stat.sid, comm=stat.comm,
        personality=read_personality(pid), umask=0o022,
        cwd=os.readlink(f"/proc/{pid}/cwd"), root=os.readlink(f"/proc/{pid}/root"), dumpable=1,
        creds=status.creds,
        mm=MmFields(stat.start_code, stat.end_code, stat.start_data, stat.end_data, stat.start_brk,
                    stat.start_brk, stat.start_stack, stat.arg_start, stat.arg_end, stat.env_start,
                    stat.env_end, read_auxv(pid), os.readlink(f"/proc/{pid}/exe")),
        rlimits=limits,
        sigactions=tuple(SigAction(0, 0, 0, 0) for _ in range(NSIG)),
        itimers=tuple(ITimer(0, 0, 0, 0) for _ in range(NR_ITIMERS)),
        posix_timers=(),
        shared_pending=(),
        vmas=vmas,
        page_runs=tuple(runs),
        fds=(),
        files=(),
        threads=(thread,),
        controls=controls_from(pid, SNAPSHOT_PRCTL, stopped=False),
        vdso=vdso_info,
    )
    return Snapshot(process, xstate, vdso_image)


def _vdso(pid, vmas) -> tuple[VdsoInfo | None, bytes | None]:
    by_kind = {v.kind: v for v in vmas if v.kind in (VmaKind.VDSO, VmaKind.VVAR, VmaKind.VVAR_VCLOCK)}
    vdso = by_kind.get(VmaKind.VDSO)
    if vdso is None:
        return None, None
    read = read_vdso(pid, vdso.start, vdso.size)
    vvar = by_kind.get(VmaKind.VVAR)
    vclock = by_kind.get(VmaKind.VVAR_VCLOCK)
    info = VdsoInfo(vdso.start, vdso.size, read.sha256, read.symbols,
                    vvar.start if vvar else None, vvar.size if vvar else 0,
                    vclock.start if vclock else None, vclock.size if vclock else 0)
    return info, read.image


def write_image(directory: Path, snap: Snapshot, **finish_args) -> None:
    """Write snap through the ImageWriter as the dump does (the dump splices where this copies)."""
    writer = ImageWriter(directory)
    process = snap.process
    pages = writer.pages_file(process.pid)
    mem = os.open(f"/proc/{process.pid}/mem", os.O_RDONLY)
    try:
        for run in process.page_runs:
            _copy(mem, run.vaddr, pages.fileno(), run.size)
    finally:
        os.close(mem)
        pages.close()
    writer.write_xstate(process.pid, snap.xstate)
    if snap.vdso_image is not None:
        writer.write_vdso(process.pid, snap.vdso_image)
    writer.write_process(process)
    writer.finish(Tree((TreeProcess.of(process),)), **finish_args)
    writer.close()


def _copy(src: int, src_offset: int, dst: int, size: int) -> None:
    data = os.pread(src, size, src_offset)
    if len(data) != size:
        raise OSError(f"/proc/PID/mem gave {len(data)} of {size} bytes at {src_offset:#x}")
    os.write(dst, data)


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
