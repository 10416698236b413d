"""`python -m runtime show DIR`: an image directory printed for people, or as JSON for programs.

Why here and through the loader: show reads the image exactly as restore
does (every check, every checksum), so what it prints is what a restore
would get, and a broken image gets the same one-line error. The only check
it leaves out is the comparison with this CPU's xsave features: an image
taken on another machine is still worth reading; show says whether this
machine could restore it instead of refusing to print it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree as RichTree

from runtime.errors import ReviveError
from runtime.files import registry, sockopts, table
from runtime.images import codec, names, sessions
from runtime.images.cpu import current_xsave_features, describe_xsave_features
from runtime.images.loader import Checkpoint, ProcessImage, load
from runtime.images.model import PAGE_SIZE, FileEntry, ThreadCore, Vma, VmaKind
from runtime.mm.vdso import VdsoMode, decide, read_running_vdso
from runtime.task import rseq

RLIMIT_NAMES = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
                "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
ITIMER_NAMES = ("REAL", "VIRTUAL", "PROF")
RLIM_INFINITY = (1 << 64) - 1
SIG_DFL = 0

def show(directory: str, as_json: bool, console: Console | None = None) -> None:
    """Load and print the image in directory; ImageError as the loader raises it."""
    with load(directory, check_cpu=False) as checkpoint:
        for image in checkpoint.processes:
            # Each file kind's own checks, which describe() relies on: the loader knows no kinds.
            table.check(image.process.files, names.process_file(image.process.pid))
        table.check(checkpoint.tree.files, names.TREE)
        if as_json:
            print(json.dumps(checkpoint_json(checkpoint), indent=1))
            return
        # Piped output has no width to fit; rich would assume 80 columns and fold every path.
        render(checkpoint, console or Console(highlight=False, width=None if sys.stdout.isatty() else 200))


def checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    """Everything in the image as the codec writes it: the inventory and every process record."""
    return {
        "directory": str(checkpoint.directory),
        "inventory": codec.encode(checkpoint.inventory),
        "tree": codec.encode(checkpoint.tree),
        "processes": [codec.encode(image.process) for image in checkpoint.processes],
    }


def render(checkpoint: Checkpoint, console: Console) -> None:
    _render_inventory(checkpoint, console)
    _render_tree(checkpoint, console)
    for image in checkpoint.processes:
        _render_process(image, checkpoint.tree.files, console)


def _render_tree(checkpoint: Checkpoint, console: Console) -> None:
    """The processes as a tree (pid, name, group, session, zombies), then what they share."""
    tree = checkpoint.tree
    processes = {image.process.pid: image.process for image in checkpoint.processes}
    branches: dict[int, RichTree] = {}
    drawn = None
    for node in tree.processes:
        what = f"zombie, wait status {node.zombie_status:#x}" if node.zombie_status is not None else \
            f"{len(processes[node.pid].threads)} thread(s)"
        label = f"[bold]{node.pid}[/] {escape(node.comm)}  pgid {node.pgid}  sid {node.sid}  ({what})"
        if drawn is None:
            drawn = branches[node.pid] = RichTree(label)
        else:
            branches[node.pid] = branches[node.ppid].add(label)
    console.rule(f"[bold]process tree: {len(tree.processes)} processes")
    console.print(drawn)
    root = checkpoint.root.process
    for stand_in in sessions.stand_ins(tree.processes, root.shell_job):
        console.print(f"{'session' if stand_in.session else 'process group'} {stand_in.pid}: its leader is gone; "
                      "a stand-in with its id makes it again at restore")
    for obj in tree.shared_memory:
        mappers = [f"{pid} at {vma.start:#x}" for pid, process in processes.items() for vma in process.vmas
                   if vma.shmem == obj.id]
        stored = sum(extent.length for extent in obj.extents)
        what = f"shared memory {obj.id}"
        if obj.sysv is not None:
            segment = obj.sysv
            what = (f"SysV segment {obj.id} key {segment.key:#010x} mode {obj.mode:03o} owner {segment.uid}:"
                    f"{segment.gid} creator {segment.cuid}:{segment.cgid}" + (" removed" if segment.removed else "")
                    + (" locked" if segment.locked else ""))
        console.print(f"{what}: {_size(obj.size)}, {stored:,} bytes stored in "
                      f"{names.shmem_file(obj.id)}; mapped by {', '.join(mappers)}")
    for made in tree.pipes:
        ends = [f"{pid} fd {slot.fd} ({'read' if entry.flags & 3 == 0 else 'write'})"
                for pid, process in processes.items() for slot in process.fds
                for entry in process.files + tree.files if entry.id == slot.file_id and entry.pipe == made.id]
        held = ("external: its ends the caller's (--inherit-fd)" if made.external else
                f"{len(made.data):,} bytes in flight" + (f" in {len(made.packets)} packets" if made.packets else ""))
        console.print(f"pipe {made.id}: capacity {_size(made.size)}, {held}; ends: {', '.join(ends)}")
    for sock in tree.sockets:
        holders = [str(pid) for pid, process in processes.items() for slot in process.fds
                   for entry in process.files + tree.files if entry.id == slot.file_id and entry.socket == sock.id]
        kind = {1: "stream", 2: "datagram", 5: "seqpacket"}.get(sock.type, str(sock.type))
        waits_on = [s.id for s in tree.sockets if sock.id in s.waiting]
        peer = (f"paired with {sock.peer}" if sock.peer else f"connected outside the tree to {sock.external!r}"
                if sock.external else f"waiting to be accepted by {waits_on[0]}" if waits_on else "unconnected")
        if sock.name:
            peer += f", bound to {sock.name!r}" + (f", listening (backlog {sock.backlog}, "
                                                   f"{len(sock.waiting)} waiting)" if sock.listening else "")
        console.print(f"unix {kind} socket {sock.id}, {peer}: {len(sock.queue)} message(s), "
                      f"{sum(len(m) for m in sock.queue):,} bytes queued, shutdown {sock.shutdown}; "
                      + (f"options {sockopts.describe(sock.options)}; " if sock.options else "")
                      + f"held by {', '.join(holders)}")
    for entry in tree.files:
        holders = [str(pid) for pid, process in processes.items() if any(s.file_id == entry.id for s in process.fds)]
        what, _ = registry.describe(entry)
        console.print(f"shared open file {entry.id}: {what} pos {entry.pos}, held by {', '.join(holders)}")


def _render_inventory(checkpoint: Checkpoint, console: Console) -> None:
    inv = checkpoint.inventory
    here = current_xsave_features()
    cpu = "matches this CPU" if inv.xsave_features == here else \
        f"DIFFERS from this CPU's {here:#x} ({describe_xsave_features(here)}): restore will refuse it"
    kernel = "this kernel" if inv.kernel_release == os.uname().release else f"running kernel is {os.uname().release}"
    console.rule(f"[bold]image {checkpoint.directory}")
    console.print(f"format version {inv.format_version}, written by {inv.tool}, root pid {inv.root_pid}")
    console.print(f"kernel release  {inv.kernel_release} ({kernel})")
    console.print(f"xsave features  {inv.xsave_features:#x} ({describe_xsave_features(inv.xsave_features)}), {cpu}")
    console.print(f"xstate size     {inv.xstate_size} bytes per thread")
    table = Table(title="files", title_justify="left")
    table.add_column("file", no_wrap=True)
    table.add_column("bytes", no_wrap=True, justify="right")
    table.add_column("sha256", overflow="fold")
    for name, digest in sorted(inv.files.items()):
        table.add_row(name, f"{(checkpoint.directory / name).stat().st_size:,}", digest)
    console.print(table)


def _render_process(image: ProcessImage, shared_files: tuple[FileEntry, ...], console: Console) -> None:
    p = image.process
    console.rule(f"[bold]process {p.pid} ({p.comm})")
    console.print(f"ppid {p.ppid}  pgid {p.pgid}  sid {p.sid}  personality {p.personality:#x}  "
                  f"umask {p.umask:03o}  dumpable {p.dumpable}  shell job {'yes' if p.shell_job else 'no'}")
    console.print(f"exe {p.mm.exe}\ncwd {p.cwd}\nroot {p.root}")
    c = p.creds
    console.print(f"uids {_ids(c.uids)}  gids {_ids(c.gids)}  groups {list(c.groups)}  "
                  f"no_new_privs {c.no_new_privs}")
    console.print(f"caps: inheritable {c.cap_inheritable:#x} permitted {c.cap_permitted:#x} "
                  f"effective {c.cap_effective:#x} bounding {c.cap_bounding:#x} ambient {c.cap_ambient:#x}")
    _render_mm(image, console)
    _render_vmas(p.vmas, console)
    pages = sum(run.nr_pages for run in p.page_runs)
    console.print(f"page runs: {len(p.page_runs)} runs, {pages} pages, {pages * PAGE_SIZE:,} bytes "
                  f"in {image.pages_path.name}")
    _render_fds(image, shared_files, console)
    _render_threads(image, console)
    _render_signals(image, console)
    _render_limits(image, console)
    _render_vdso(image, console)


def _ids(ids: Iterable[int]) -> str:
    return "/".join(str(i) for i in ids)


def _render_mm(image: ProcessImage, console: Console) -> None:
    mm = image.process.mm
    console.print(f"code {mm.start_code:#x}-{mm.end_code:#x}  data {mm.start_data:#x}-{mm.end_data:#x}  "
                  f"brk {mm.start_brk:#x}-{mm.brk:#x}  stack {mm.start_stack:#x}")
    console.print(f"args {mm.arg_start:#x}-{mm.arg_end:#x}  env {mm.env_start:#x}-{mm.env_end:#x}  "
                  f"auxv {len(mm.auxv) // 2} entries")


def _prot(vma: Vma) -> str:
    return "".join(c if vma.prot & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4))) + \
        ("s" if vma.shared else "p")


def _render_vmas(vmas: Iterable[Vma], console: Console) -> None:
    table = Table(title="VMAs", title_justify="left")
    for name in ("start", "end", "size", "prot", "kind", "offset", "advice"):
        table.add_column(name, no_wrap=True)
    table.add_column("name", overflow="fold")
    for vma in vmas:
        if vma.kind is VmaKind.SYSV:
            kind = f"sysv {vma.shmem}" + (" ro" if vma.sysv_readonly else "")
        else:
            kind = f"shmem {vma.shmem}" if vma.shmem is not None else vma.kind.value
            kind += " gd" if vma.growsdown else ""
        table.add_row(f"{vma.start:#x}", f"{vma.end:#x}", _size(vma.size), _prot(vma), kind,
                      f"{vma.offset:#x}" if vma.kind is VmaKind.FILE or vma.shmem is not None else "",
                      ",".join(advice.value for advice in vma.advice), vma.name or (vma.path or ""))
    console.print(table)


def _size(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def _render_fds(image: ProcessImage, shared_files: tuple[FileEntry, ...], console: Console) -> None:
    rows = Table("fd", "file", "kind", "path", "flags", "pos", "mode", "cloexec", title="file descriptors",
                 title_justify="left")
    for row in table.describe_rows(image.process, shared_files):
        rows.add_row(*row)
    console.print(rows)


def _render_threads(image: ProcessImage, console: Console) -> None:
    threads = image.process.threads
    console.print(f"threads         {len(threads)}: {_ids(t.tid for t in threads)}")
    for thread in threads:
        _render_thread(thread, image, console)


def _render_thread(thread: ThreadCore, image: ProcessImage, console: Console) -> None:
    r = thread.regs
    state = "running" if thread.in_syscall is None else f"in syscall {thread.in_syscall}"
    console.print(f"[bold]thread {thread.tid}[/] {thread.comm!r} ({state}): rip {r.rip:#x} rsp {r.rsp:#x} "
                  f"rax {r.rax:#x} orig_rax {r.orig_rax:#x} eflags {r.eflags:#x} cs {r.cs:#x} ss {r.ss:#x} "
                  f"fs_base {r.fs_base:#x} gs_base {r.gs_base:#x}")
    console.print(f"  blocked {_signals(thread.blocked)}  pending {len(thread.pending)}  "
                  f"altstack sp {thread.altstack.sp:#x} size {thread.altstack.size} flags {thread.altstack.flags:#x}  "
                  f"clear_child_tid {thread.clear_child_tid:#x}  xstate {image.xstate_paths[thread.tid].name}")
    if thread.robust_list:
        console.print(f"  robust_list {thread.robust_list:#x} len {thread.robust_list_len}")
    if thread.sched is not None:
        console.print(f"  own scheduling: policy {thread.sched.policy} nice {20 - thread.sched.nice_rank} "
                      f"priority {thread.sched.priority}")
    if thread.cpus is not None:
        console.print(f"  own CPU affinity: {_ids(thread.cpus)}")
    for line in rseq.describe(thread.rseq):
        console.print(f"  {line}", markup=False)


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIGRT{number - signal.SIGRTMIN}" if number >= signal.SIGRTMIN else str(number)


def _signals(mask: int) -> str:
    names = [_signame(bit + 1) for bit in range(64) if mask >> bit & 1]
    return ",".join(names) if names else "none"


def _render_signals(image: ProcessImage, console: Console) -> None:
    p = image.process
    table = Table("signal", "handler", "flags", "restorer", "mask", title="sigactions that are not SIG_DFL",
                  title_justify="left")
    for number, action in enumerate(p.sigactions, 1):
        if action.handler != SIG_DFL or action.flags or action.mask:
            handler = {0: "SIG_DFL", 1: "SIG_IGN"}.get(action.handler, f"{action.handler:#x}")
            table.add_row(_signame(number), handler, f"{action.flags:#x}", f"{action.restorer:#x}",
                          _signals(action.mask))
    console.print(table)
    console.print(f"process-wide pending signals: {len(p.shared_pending)}")


def _render_limits(image: ProcessImage, console: Console) -> None:
    p = image.process
    limits = "  ".join(f"{name} {_limit(lim.cur)}/{_limit(lim.max)}" for name, lim in zip(RLIMIT_NAMES, p.rlimits))
    console.print(f"rlimits: {limits}")
    timers = [f"{name} value {t.value_sec}.{t.value_usec:06d}s interval {t.interval_sec}.{t.interval_usec:06d}s"
              for name, t in zip(ITIMER_NAMES, p.itimers) if t.value_sec or t.value_usec]
    console.print(f"itimers: {'; '.join(timers) if timers else 'none armed'}")
    for t in p.posix_timers:
        whom = {0: "signal", 1: "no signal", 2: "signal (SIGEV_THREAD)", 4: f"signal to thread {t.tid}"}[t.notify]
        console.print(f"POSIX timer {t.id}: clock {t.clock}, {whom} {t.signal} value {t.sigev_value:#x}, "
                      f"value {t.value_sec}.{t.value_nsec:09d}s interval {t.interval_sec}.{t.interval_nsec:09d}s, "
                      f"overrun {t.overrun}")


def _limit(value: int) -> str:
    return "unlimited" if value == RLIM_INFINITY else str(value)


def _render_vdso(image: ProcessImage, console: Console) -> None:
    vdso = image.process.vdso
    if vdso is None:
        console.print("vdso: none")
        return
    console.print(f"vdso {vdso.vdso_start:#x} size {vdso.vdso_size} sha256 {vdso.sha256} "
                  f"{len(vdso.symbols)} symbols{' (a proxy this tool installed)' if vdso.proxy else ''}")
    for name, start, size in (("vvar", vdso.vvar_start, vdso.vvar_size),
                              ("vvar_vclock", vdso.vvar_vclock_start, vdso.vvar_vclock_size)):
        if start is not None:
            console.print(f"{name} {start:#x} size {size}")
    console.print(f"vdso symbols: {', '.join(s.name for s in vdso.symbols)}")
    console.print(f"vdso on restore here: {_vdso_path(image)}")


def _vdso_path(image: ProcessImage) -> str:
    try:
        decision = decide(image.process.vdso, read_running_vdso(), VdsoMode.AUTO)
    except ReviveError as exc:
        return f"cannot tell ({exc})"
    return f"{decision.path.value} ({decision.reason})"

