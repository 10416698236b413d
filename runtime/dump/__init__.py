"""Dumping a process tree: freeze, read, infect each process, save pages, cure, write the images, kill or release.

Why this order: every process of the tree is stopped first (infect/tree.py),
parents before children, so none can fork, exit or change a shared object
while another is read. Then everything the parasite would change is read,
while each task is stopped at its own instruction: its registers (with an
interrupted syscall turned into its restart, as the kernel would on return
to user mode), the full xstate, the signal mask, the pending signals and
the rseq state (the kernel clears (struct rseq).rseq_cs as soon as the task
returns to user mode outside a critical section, which the parasite does),
for every thread. What the tree shares is found next: open files held by
several processes (kcmp, files/table.py), shared anonymous memory
(mm/shmem.py) and SysV segments (mm/sysv.py), each saved once. What only the process itself can say
(sigactions, umask, rlimits, itimers, brk) and the page data come from the
parasite in the leader of each process; what only a thread can say about
itself (altstack, clear_child_tid) from the parasite run in that thread
(runtime/infect/thread_run.py). The images are written last, the inventory
last of all (the writer's commit point), and only then is the tree killed,
still stopped under ptrace, so no process runs a single instruction after
its state was taken.

What is not supported yet is refused before any process is touched beyond
seizing, and any failure at any step cures, detaches and leaves the whole
tree running exactly as before, with no inventory in the image directory.
"""

import logging
import os
import signal
from dataclasses import dataclass, fields, replace
from pathlib import Path

from runtime import faults, progress
from runtime.arch import x86_64 as arch
from runtime.dump import refusals
from runtime.files import inet, pipe, table, unix, unlinked
from runtime.errors import DumpError, ReviveError
from runtime.kernel import ptrace
from runtime.task import futex_links, rseq, controls as task_controls, posix_timers as task_posix_timers
from runtime.images.model import (KERNEL_MAPPING_KINDS, FdSlot, FileEntry, ITimer, MmFields, PageRun, Process,
                                  Registers, Rseq, SchedAttr, SharedMemory, ThreadCore, Tree, TreeProcess, VdsoInfo,
                                  Vma, VmaKind)
from runtime.images.writer import ImageWriter
from runtime.infect.parasite import Iovec, ThreadState
from runtime.infect.seize import Seized
from runtime.infect.session import infect, is_leftover
from runtime.infect.tree import FrozenTree, freeze_tree
from runtime.kernel.procfs import auxv, fds, maps, stat, status, sysvipc, timers, vdso
from runtime.kernel.procfs.mem import copy_memory
from runtime.kernel.procfs.files import read_link
from runtime.kernel.procfs.maps import DELETED_SUFFIX, Mapping
from runtime.mm import shmem, sysv
from runtime.mm.vdso import find_proxy
from runtime.mm.vmas import by_readability, plan_page_runs

log = logging.getLogger(__name__)

PEEK_BATCH = 32


@dataclass(frozen=True)
class DumpOptions:
    leave_running: bool = False  # detach and let it run (default: SIGKILL after a successful dump)
    shell_job: bool = False  # stdio terminal/pipes are the caller's: saved as FdKind.INHERIT
    force_dir: bool = False  # accept an image directory of ours that group or others may write (made 0700)
    ghost_limit: int = 1 << 20  # the largest deleted file whose contents the image keeps, in bytes
    ext_unix_sk: bool = False  # a unix socket connected to a named one outside the tree: connected to it again
    external: frozenset[int] = frozenset()  # --external pipe:[INODE]: pipes held outside too, the caller's at restore
    tcp_established: bool = False  # established TCP connections kept (TCP repair, the network lock: docs/tcp.md)
    tcp_close: bool = False  # established TCP connections reset


@dataclass(frozen=True)
class ThreadSnapshot:
    """A thread's state read through ptrace before the parasite runs."""

    tid: int
    regs: Registers  # as the task resumes: syscall restart applied, rseq abort applied
    xstate: bytes
    blocked: int
    pending: tuple[bytes, ...]
    rseq: Rseq | None
    robust_list: tuple[int, int]  # (head, len) from get_robust_list
    comm: str
    sched: SchedAttr | None  # where it differs from the leader's
    cpus: tuple[int, ...] | None  # where it differs from the leader's
    io_priority: int | None  # where it differs from the leader's
    in_syscall: int | None  # the syscall it was stopped in, before the restart was applied


@dataclass(frozen=True)
class Snapshot:
    """Everything read from /proc and ptrace before infection."""

    stat: stat.Stat
    status: status.Status
    personality: int
    auxv: tuple[int, ...]
    exe: str
    cwd: str
    root: str
    vmas: tuple[Vma, ...]
    page_runs: tuple[PageRun, ...]
    fds: tuple[FdSlot, ...]
    files: tuple[FileEntry, ...]
    threads: tuple[ThreadSnapshot, ...]  # the leader first
    shared_pending: tuple[bytes, ...]
    posix_timers: tuple[timers.TimerEntry, ...]
    vdso: vdso.Vdso | None
    vdso_info: VdsoInfo | None
    leader_exited: bool  # the leader is a zombie; threads are the others


def dump(pid: int, directory: str | os.PathLike, options: DumpOptions = DumpOptions()) -> Process:
    """Checkpoint the tree rooted at pid into directory (see the module docstring); the root's record."""
    log.info("dumping pid %d and its descendants into %s", pid, directory)
    frozen = freeze_tree(pid)
    directory = Path(directory)
    writer = None
    network = inet.Dumped()  # the tree's TCP connections in repair mode and the network lock, until the end
    try:
        faults.point("dump.seize")
        snapshots: dict[int, Snapshot] = {}
        for p, seized in frozen.seized.items():
            # File ids are unique in the image: an entry held by several processes becomes one.
            first_id = 1 + sum(len(snapshot.files) for snapshot in snapshots.values())
            snapshots[p] = take_snapshot(p, seized, options, first_id)
        nodes = tree_processes(frozen, snapshots)
        refusals.check_tree(nodes, options.shell_job)
        refusals.check_sysv_segments({p: s.vmas for p, s in snapshots.items()})
        views = {p: seized.worker for p, seized in frozen.seized.items()}
        tables, shared_files = table.share_across({p: (s.fds, s.files) for p, s in snapshots.items()}, views)
        pipes = pipe.save(pipe.ends_of(tables, shared_files, views), set(frozen.pids), options.external)
        sockets = unix.save(unix.ends_of(tables, shared_files), options.ext_unix_sk)
        tables, shared_files = inet.save(tables, shared_files, inet.TcpChoice(options.tcp_established,
                                                                              options.tcp_close), network)
        if network.locked:
            faults.point("dump.network")
        faults.point("dump.snapshot")
        writer = ImageWriter(directory, force_dir=options.force_dir)
        processes = {}
        for p, seized in frozen.seized.items():
            snapshot = replace(snapshots[p], fds=tables[p][0], files=tables[p][1])
            processes[p] = _dump_with_parasite(p, seized, snapshot, writer, options)
        shared_memory = save_shared_memory(frozen, snapshots, unlinked.reaches(tables, shared_files, views), writer,
                                           options.ghost_limit)
        writer.finish(Tree(nodes, shared_memory, shared_files, pipes, sockets))
        faults.point("dump.kill")
        writer.close()
    except BaseException as exc:
        log.debug("dump of the tree of pid %d failed: %s", pid, exc)
        network.release()
        try:
            frozen.release()
        except ReviveError as release_error:
            log.error("releasing the tree of pid %d after the failed dump: %s", pid, release_error)
        if writer is not None:
            writer.discard()
        if isinstance(exc, OSError):
            raise DumpError(pid, f"{exc.strerror or exc}") from exc
        raise
    if options.leave_running:
        network.release()
        frozen.release()
        log.info("tree of pid %d dumped and left running", pid)
    else:
        for seized in reversed(list(frozen.seized.values())):
            kill_seized(seized)
        network.close()  # after the kill: the runtime's descriptors are the sockets' last
        sysv.remove_dumped(shared_memory)
        log.info("tree of pid %d dumped and killed", pid)
    return processes[pid]


def tree_processes(frozen: FrozenTree, snapshots: dict[int, Snapshot]) -> tuple[TreeProcess, ...]:
    """Every process's place in the tree, each parent before its children; zombies with their wait status."""
    nodes = []
    for pid in frozen.pids:
        if pid in frozen.zombies:
            zombie = frozen.zombies[pid]
            st = zombie.stat
            nodes.append(TreeProcess(pid, st.ppid, st.pgid, st.sid, st.comm, zombie_status=zombie.status))
        else:
            st = snapshots[pid].stat
            nodes.append(TreeProcess(pid, st.ppid, st.pgid, st.sid, st.comm))
    return tuple(nodes)


def save_shared_memory(frozen: FrozenTree, snapshots: dict[int, Snapshot], memfds: dict[int, shmem.Reach],
                       writer: ImageWriter, ghost_limit: int) -> tuple[SharedMemory, ...]:
    """Each shared memory object of the tree, once: its data into shmem-ID.img, read through one mapping or fd.

    A deleted regular file larger than ghost_limit is refused before its data is read. A SysV segment
    (runtime/mm/sysv.py) is saved with its ids and permissions from /proc/sysvipc/shm.
    """
    found = shmem.objects({frozen.seized[p].worker: s.vmas for p, s in snapshots.items()}, memfds)
    segments = sysvipc.read_shm() if any(sysv.is_segment(reach) for reach in found.values()) else {}
    saved = []
    for shmem_id, reach in sorted(found.items()):
        if sysv.is_segment(reach):
            saved.append(sysv.save(reach, segments[shmem_id], writer.shmem_file(shmem_id)))
            continue
        shmem.check_ghost_size(reach, ghost_limit)
        saved.append(shmem.save(reach, shmem_id, writer.shmem_file(shmem_id)))
    faults.point("dump.shmem")
    return tuple(saved)


def take_snapshot(pid: int, seized: Seized, options: DumpOptions, first_file_id: int = 1) -> Snapshot:
    """Read (and refuse what is unsupported in) a seized process, before any parasite runs.

    Everything is read through a live task, `view`: the leader, or, once it
    has exited, the first other thread (a zombie's /proc shows no memory or files).
    """
    view = seized.worker
    st = status.read_status(pid)
    # The leader's own stat names the process; the memory fields are gone with a zombie leader's mm.
    task_stat = stat.read_stat(pid)
    if view != pid:
        task_stat = replace(stat.read_thread_stat(pid, view), comm=task_stat.comm, state=task_stat.state)
    # A parasite area (and its fd) a killed runtime left behind is removed by the infection.
    mappings = tuple(m for m in maps.read_mappings(view) if not is_leftover(m.name))
    proxy = find_proxy(view, mappings)
    if proxy is not None:
        # A vDSO proxy a restore installed is this process's vDSO (docs/vdso.md): a special mapping.
        mappings = tuple(replace(m, name="[vdso]") if m == proxy else m for m in mappings)
    found_files = tuple(f for f in fds.read_open_files(view) if not is_leftover(f.link))
    found_timers = timers.read_timers(pid, view)
    refusals.check_process(pid, view, seized.tids, st, task_stat, mappings, found_files, found_timers)
    vmas = tuple(m.vma() for m in mappings if m.name != maps.VSYSCALL)
    fd_slots, file_entries = table.dump_table(pid, found_files, options.shell_job, first_file_id, view=view)
    page_runs = plan_page_runs(view, mappings)
    found_vdso, vdso_info = read_vdso_info(view, vmas, proxy)
    # Last: for a thread inside an rseq critical section this moves it to its abort handler.
    leader = task_controls.read_scheduling(view)
    threads = tuple(snapshot_thread(view, tid, leader) for tid in seized.tids)
    return Snapshot(
        stat=task_stat,
        status=st,
        personality=stat.read_personality(view),
        auxv=auxv.read_auxv(view),
        exe=_existing_path(pid, view, "exe", "executable"),
        cwd=_existing_path(pid, view, "cwd", "working directory"),
        root=_existing_path(pid, view, "root", "root directory"),
        vmas=vmas,
        page_runs=page_runs,
        fds=fd_slots,
        files=file_entries,
        threads=threads,
        shared_pending=peek_pending(view, shared=True),
        posix_timers=found_timers,
        vdso=found_vdso,
        vdso_info=vdso_info,
        leader_exited=seized.leader_exited,
    )


def _existing_path(pid: int, view: int, link: str, what: str) -> str:
    path = read_link(view, link)
    if path.endswith(DELETED_SUFFIX):
        raise DumpError(pid, f"{what} {path} was deleted: not supported yet")
    return path


# -- the vDSO --------------------------------------------------------------------------------

def read_vdso_info(pid: int, vmas: tuple[Vma, ...],
                   proxy: Mapping | None = None) -> tuple[vdso.Vdso | None, VdsoInfo | None]:
    """The process's vDSO: its proxy if it has one (the kernel's own [vdso] is then elsewhere)."""
    special = {v.kind: v for v in vmas if v.kind in KERNEL_MAPPING_KINDS}
    vdso_vma = special.get(VmaKind.VDSO) if proxy is None else proxy.vma()
    if vdso_vma is None:
        return None, None
    found = vdso.read_vdso(pid, vdso_vma.start, vdso_vma.size)
    vvar, vclock = special.get(VmaKind.VVAR), special.get(VmaKind.VVAR_VCLOCK)
    info = VdsoInfo(
        vdso_start=vdso_vma.start, vdso_size=vdso_vma.size, sha256=found.sha256, symbols=found.symbols,
        vvar_start=vvar.start if vvar else None, vvar_size=vvar.size if vvar else 0,
        vvar_vclock_start=vclock.start if vclock else None, vvar_vclock_size=vclock.size if vclock else 0,
        proxy=proxy is not None,
    )
    return found, info


# -- the thread, before infection ------------------------------------------------------------

def snapshot_thread(view: int, tid: int, leader: task_controls.Scheduling) -> ThreadSnapshot:
    """Registers (rseq abort applied first, as the kernel would), xstate, mask, queued signals, robust list, name."""
    fixup = rseq.fix_up_thread(tid)
    resumed = arch.resume_registers(fixup.regs)
    # The restored task returns by rt_sigreturn, which leaves no syscall to restart.
    resumed.orig_rax = arch.NO_SYSCALL
    regs = Registers(**{f.name: getattr(resumed, f.name) for f in fields(Registers)})
    sched, cpus, io_priority = task_controls.thread_differences(leader, tid)  # all None for the leader
    return ThreadSnapshot(tid, regs, ptrace.get_xstate(tid), ptrace.get_sigmask(tid),
                          peek_pending(tid, shared=False), fixup.rseq, futex_links.read_robust_list(tid),
                          stat.read_thread_comm(view, tid), sched, cpus, io_priority,
                          None if arch.signed(fixup.regs.orig_rax) < 0 else fixup.regs.orig_rax)


def peek_pending(tid: int, shared: bool) -> tuple[bytes, ...]:
    """Every queued siginfo of the thread (or, shared, of its process), oldest first."""
    queued: list[bytes] = []
    while True:
        batch = ptrace.peek_siginfo(tid, shared, start=len(queued), count=PEEK_BATCH)
        queued.extend(batch)
        if len(batch) < PEEK_BATCH:
            return tuple(queued)


# -- the parasite part, and the images ----------------------------------------------------------

def _dump_with_parasite(pid: int, seized: Seized, snapshot: Snapshot, writer: ImageWriter,
                        options: DumpOptions) -> Process:
    pages = writer.pages_file(pid)
    iovecs = [Iovec(run.vaddr, run.size) for run in snapshot.page_runs]
    with infect(seized) as parasite:
        faults.point("dump.infect")
        misc = parasite.get_misc()
        faults.point("dump.misc")
        if misc.pid != pid:
            raise DumpError(pid, f"the process sees itself as pid {misc.pid}: "
                                 "processes in another PID namespace are not supported yet")
        controls = task_controls.controls_from(seized.worker, misc.prctl, stopped=seized.leader.group_stopped)
        sigactions = parasite.dump_sigactions()
        faults.point("dump.sigactions")
        found_timers = snapshot.posix_timers
        posix_timers = task_posix_timers.saved(found_timers, parasite.dump_posix_timers([t.id for t in found_timers]))
        own_states = [parasite.dump_thread(thread.tid) for thread in snapshot.threads]
        for own in own_states[1:]:
            task_controls.check_thread_controls(pid, own.tid, own.prctl, own_states[0].prctl)
        faults.point("dump.thread")
        with progress.watch("dump", sum(v.len for v in iovecs), lambda: os.fstat(pages.fileno()).st_size):
            written = 0
            for readable, runs in by_readability(snapshot.page_runs, snapshot.vmas):
                if readable:
                    written += parasite.dump_pages([Iovec(run.vaddr, run.size) for run in runs], pages.fileno())
                    continue
                for run in runs:
                    copy_memory(seized.worker, run.vaddr, run.size, pages.fileno())
                    written += run.size
        faults.point("dump.pages")
    faults.point("dump.cure")
    log.info("pid %d: %d page runs, %d bytes of pages", pid, len(iovecs), written)
    cores = tuple(thread_core(thread, own) for thread, own in zip(snapshot.threads, own_states))
    st = snapshot.stat
    mm = MmFields(start_code=st.start_code, end_code=st.end_code, start_data=st.start_data, end_data=st.end_data,
                  start_brk=st.start_brk, brk=misc.brk, start_stack=st.start_stack,
                  arg_start=st.arg_start, arg_end=st.arg_end, env_start=st.env_start, env_end=st.env_end,
                  auxv=snapshot.auxv, exe=snapshot.exe)
    process = Process(
        pid=pid, ppid=st.ppid, pgid=st.pgid, sid=st.sid, comm=st.comm,
        personality=snapshot.personality, umask=misc.umask, cwd=snapshot.cwd, root=snapshot.root,
        dumpable=misc.dumpable, creds=snapshot.status.creds, mm=mm,
        rlimits=misc.rlimits, sigactions=sigactions, itimers=armed_itimers(misc.itimers), posix_timers=posix_timers,
        shared_pending=snapshot.shared_pending, vmas=snapshot.vmas, page_runs=snapshot.page_runs,
        fds=snapshot.fds, files=snapshot.files, threads=cores, controls=controls, vdso=snapshot.vdso_info,
        shell_job=options.shell_job, leader_exited=snapshot.leader_exited,
    )
    for thread in snapshot.threads:
        writer.write_xstate(thread.tid, thread.xstate)
    if snapshot.vdso is not None:
        writer.write_vdso(pid, snapshot.vdso.image)
    writer.write_process(process)
    faults.point("dump.write")
    return process


def thread_core(thread: ThreadSnapshot, own: ThreadState) -> ThreadCore:
    """A thread's image record: what ptrace read before the parasite, and what the thread told the parasite."""
    robust_list, robust_list_len = thread.robust_list
    return ThreadCore(tid=thread.tid, regs=thread.regs, blocked=thread.blocked, altstack=own.altstack,
                      clear_child_tid=own.clear_child_tid, pending=thread.pending, rseq=thread.rseq,
                      robust_list=robust_list, robust_list_len=robust_list_len, comm=thread.comm,
                      sched=thread.sched, cpus=thread.cpus, io_priority=thread.io_priority,
                      in_syscall=thread.in_syscall)


def armed_itimers(itimers: tuple[ITimer, ...]) -> tuple[ITimer, ...]:
    """The timers as setitimer must see them at restore.

    An ITIMER_REAL that expired while the task was stopped reads as value 0
    with its interval still set: the kernel re-arms it only when the task
    dequeues that SIGALRM. setitimer with value 0 would disarm it, so an
    expired periodic REAL timer is recorded as due again one interval on.
    (VIRTUAL and PROF are re-armed by the kernel at expiry.)
    """
    real, *others = itimers
    if (real.value_sec, real.value_usec) == (0, 0) and (real.interval_sec, real.interval_usec) != (0, 0):
        real = replace(real, value_sec=real.interval_sec, value_usec=real.interval_usec)
    return (real, *others)


def kill_seized(seized: Seized) -> None:
    """SIGKILL a process that is still stopped under our ptrace and collect its exit as its tracer.

    Killing before the detach means it runs nothing after its state was
    taken; waiting as tracer hands the exit on to its real parent (or reaps
    it, if that is us), the other threads first.
    """
    os.kill(seized.pid, signal.SIGKILL)
    # The leader's exit is reported only once every other thread's has been collected.
    for tid in reversed(list(seized.threads)):
        try:
            while not ptrace.wait(tid).exited:
                pass
        except ReviveError as exc:
            log.debug("waiting for killed thread %d: %s", tid, exc)
        del seized.threads[tid]
