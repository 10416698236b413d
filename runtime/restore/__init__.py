"""Restore a process tree from an image directory: validate, plan, fork the tree with its PIDs, hand over.

Why this shape: everything that can be checked is checked before the first
clone3 (the loader validates the image; the vDSO, layout and PIDs are
compared here), because once a restorer has unmapped its process's memory
there is no way back. Everything each member needs is planned here too, in
the runtime, before the fork: the members are copies of this process and
inherit the plan (restore/spawn.py says how they fork each other,
restore/child.py how each becomes its process, restore/conductor.py how
the runtime follows them). The shared memory objects are made here, once,
and every member inherits them; so are the pipes the runtime talks to the
members over.

File descriptor numbers are planned for the whole tree: above every target
fd of every process and every fd the runtime holds come first the slots of
the tree's shared open files (the same number in every process, where
their opener put them), then each process's own helpers (restorer_args).
"""

import contextlib
import logging
import os
import resource
import signal

from runtime import faults
from runtime.errors import RestoreError
from runtime.files import inet, inherit, pipe as pipe_kind, table, unix as unix_kind
from runtime.images import loader, names, sessions
from runtime.images.model import FdKind, FileEntry, Process, RLimit, SharedMemory, TreeProcess
from runtime.kernel import netlock
from runtime.kernel.procfs import sysvipc
from runtime.kernel.procfs.holders import describe_holder
from runtime.mm import shmem, sysv
from runtime.mm.vdso import RunningVdso, VdsoMode, VdsoPlan, plan_restore, read_running_vdso
from runtime.restore import child as restore_child, conductor, spawn
from runtime.restore.restorer_args import build_area, created_threads, fd_base, own_layout, plan_fds, target_ranges
from runtime.task import posix_timers, rseq

log = logging.getLogger(__name__)

# The kinds whose open files a member makes for the processes it forks, at tree-wide numbers.
MADE_KINDS = (FdKind.PIPE, FdKind.FIFO, FdKind.UNIX, FdKind.MEMFD, FdKind.DELETED)
STAND_IN_NAME = "revive-stand-in"  # what a stand-in for a gone session or group leader calls itself
# What a restore that waits for its root passes on to it (wait_relaying_signals).
RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def restore(directory: str, detach: bool = False, shell_job: bool = False, vdso_mode: VdsoMode = VdsoMode.AUTO,
            leave_traced: bool = False, inherit_fds: tuple[inherit.InheritFd, ...] = ()) -> int:
    """Restore the tree in directory; the restored root's exit status (0 at once with detach).

    inherit_fds: --inherit-fd, the caller's descriptors that stand for the ends of the pipes dumped as external.

    leave_traced (for tests): return at once with every task still stopped
    under this process's ptrace, in its own registers, before it has run
    any of its own code (a process dumped group-stopped is not stopped
    again: that is the caller's to do).
    """
    _raise_nofile_limit()
    # The image files stay open only until the members have inherited them.
    with loader.load(directory) as checkpoint, contextlib.ExitStack() as opened:
        # The loader checked that the tree's sessions and groups can be made.
        stand_ins = sessions.stand_ins(checkpoint.tree.processes, checkpoint.root.process.shell_job)
        check_restorable(checkpoint, stand_ins, shell_job, detach)
        caller_ends = external_pipe_ends(checkpoint, inherit_fds)
        faults.point("restore.validate")
        shmem_fds = {}
        segments = opened.enter_context(sysv.removed_on_failure())  # the SysV segments made
        for obj in checkpoint.tree.shared_memory:
            if obj.sysv is not None:
                sysv.create(obj, checkpoint.shmem[obj.id], _attacher(checkpoint, obj.id))
                segments.append(obj)
                continue
            shmem_fds[obj.id] = _make_shared_memory(checkpoint, obj)
            opened.callback(os.close, shmem_fds[obj.id])
        pipes = conductor.Pipes.open([node.pid for node in checkpoint.tree.processes] + [s.pid for s in stand_ins])
        opened.callback(pipes.close)
        tree = plan_tree(checkpoint, stand_ins, shmem_fds, pipes, vdso_mode, caller_ends)
        faults.point("restore.clone")
        root = conductor.Conductor(tree, pipes).restore(leave_traced)
        sysv.finish(segments)  # every process has attached its segments
        # Every connection is live again in its process: their packets go through (docs/tcp.md).
        _unlock(checkpoint)
    log.info("the tree of pid %d restored from %s", root, directory)
    if detach or leave_traced:
        return 0
    return wait_relaying_signals(root)


def _unlock(checkpoint: loader.Checkpoint) -> None:
    """The network lock the dump took on the tree's TCP connections, lifted (the restore has succeeded)."""
    try:
        netlock.unlock(inet.connections(checkpoint.tree.files + tuple(
            entry for image in checkpoint.processes for entry in image.process.files)))
    except netlock.LockError as exc:
        log.error("the restored TCP connections stay blocked: %s; lift the lock by hand: nft delete table %s %s",
                  exc, netlock.FAMILY, netlock.TABLE)


def _make_shared_memory(checkpoint: loader.Checkpoint, obj: SharedMemory) -> int:
    """The object made once for every process that maps or holds it; a deleted file or memfd with the file-system
    identity of its first holder."""
    if obj.path is None:
        return shmem.create(obj, checkpoint.shmem[obj.id])
    mapper = next(image.process for image in checkpoint.processes
                  if any(v.shmem == obj.id for v in image.process.vmas)
                  or any(entry.shmem == obj.id for entry in image.process.files + checkpoint.tree.files
                         if any(slot.file_id == entry.id for slot in image.process.fds)))
    with restore_child.acting_as(mapper.creds):
        return shmem.create(obj, checkpoint.shmem[obj.id])


def _attacher(checkpoint: loader.Checkpoint, shmem_id: int) -> int:
    """The first process that maps a shared memory object (the one an error about it names), else the root."""
    return next((image.process.pid for image in checkpoint.processes
                 if any(vma.shmem == shmem_id for vma in image.process.vmas)), checkpoint.root.process.pid)


def _raise_nofile_limit() -> None:
    """The tree's pipes and files may need more descriptors than the soft limit; each member sets its own later."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def plan_tree(checkpoint: loader.Checkpoint, stand_ins: tuple[sessions.StandIn, ...], shmem_fds: dict[int, int],
              pipes: conductor.Pipes, vdso_mode: VdsoMode,
              caller_ends: dict[int, dict[bool, int]] | None = None) -> spawn.TreePlan:
    """Every member's plan (the stand-ins' too), fd numbers for the whole tree, who opens each shared file.

    caller_ends: external_pipe_ends's answer.
    """
    tree = checkpoint.tree
    images = {image.process.pid: image for image in checkpoint.processes}
    base = fd_base([image.process for image in checkpoint.processes], _open_fds())
    # Every open file a member makes for the processes it forks has a tree-wide slot: the tree's shared files,
    # and every end of a pipe, FIFO or socket, every open file of a memfd or deleted file.
    slotted = tree.files + tuple(entry for image in checkpoint.processes for entry in image.process.files
                                 if entry.kind in MADE_KINDS)
    shared_slots = {entry.id: base + index for index, entry in enumerate(slotted)}
    first = base + len(slotted)
    adopted = {pid: stand_in.pid for stand_in in stand_ins for pid in stand_in.adopts}
    # Each creator forks its stand-ins first: a group or session exists before its members join it.
    children: dict[int, list[int]] = {sessions.RUNTIME: []}
    children.update({node.pid: [] for node in tree.processes})
    children.update({stand_in.pid: [] for stand_in in stand_ins})
    for stand_in in stand_ins:
        children[stand_in.creator].append(stand_in.pid)
    for node in tree.processes:
        children[adopted.get(node.pid, sessions.RUNTIME if node is tree.processes[0] else node.ppid)].append(node.pid)
    openers = _openers(checkpoint, shared_slots, shmem_fds, caller_ends or {})
    running_vdso = read_running_vdso()
    own = own_layout()
    root = tree.processes[0]
    shell_job = images[root.pid].process.shell_job
    caller_group = os.getpgid(0)
    members = {}
    made = {stand_in.pid: stand_in for stand_in in stand_ins}
    sids = {node.pid: node.sid for node in tree.processes}
    for pid in _creation_order(children):
        reaps = tuple(child for child in children[pid] if child in made)
        if pid in made:
            stand_in = made[pid]
            sid = pid if stand_in.session else sids.get(stand_in.creator, os.getsid(0))
            node = TreeProcess(pid, stand_in.creator or os.getpid(), pid, sid, STAND_IN_NAME)
            members[pid] = spawn.Member(
                node=node, plan=None, children=tuple(children[pid]), go_fd=pipes.go[pid][0], err_fd=pipes.err[pid][1],
                opens=(), pgid=pid, new_session=stand_in.session, stand_in=True, reaps=reaps)
            continue
        node = next(node for node in tree.processes if node.pid == pid)
        plan = None
        if node.zombie_status is None:
            image = images[node.pid]
            process = image.process
            fds = plan_fds(process, first, shared_slots)
            vdso = plan_vdso(process, image.vdso_image, vdso_mode, running_vdso)
            area = build_area(process, image.xstates, fds, vdso, own)
            plan = restore_child.ChildPlan(process, image.pages.fileno(), fds, area, capped_rlimits(process),
                                           tuple(shmem_fds.items()), tree.files)
        outside_group = shell_job and node.pgid == root.pgid != root.pid
        members[pid] = spawn.Member(
            node=node, plan=plan, children=tuple(children[pid]), go_fd=pipes.go[pid][0], err_fd=pipes.err[pid][1],
            opens=tuple(openers.get(pid, ())), pgid=caller_group if outside_group else node.pgid,
            new_session=node.sid == node.pid and not (node is root and shell_job), adopted=pid in adopted,
            reaps=reaps)
    return spawn.TreePlan(members, root.pid, pipes.report[1], pipes.runtime_ends)


def _creation_order(children: dict[int, list[int]]) -> list[int]:
    """Every member, each after its creator: the one the runtime forks first."""
    order, pending = [], list(children[sessions.RUNTIME])
    while pending:
        order.append(pending.pop(0))
        pending.extend(children[order[-1]])
    return order


def _openers(checkpoint: loader.Checkpoint, slots: dict[int, int], shmem_fds: dict[int, int],
             caller_ends: dict[int, dict[bool, int]]) -> dict[int, list[spawn.Made]]:
    """Who makes each file with a slot: the nearest common ancestor of its holders, before it forks them.

    A shared file is opened as its first holder would; a pipe is made once
    with every end of it, whoever holds them.
    """
    tree = checkpoint.tree
    parents = {node.pid: node.ppid for node in tree.processes[1:]}

    def ancestry(pid: int) -> list[int]:
        chain = [pid]
        while chain[-1] in parents:
            chain.append(parents[chain[-1]])
        return chain

    def common_ancestor(ids: set[int]) -> tuple[int, Process]:
        holders = [image.process for image in checkpoint.processes
                   if any(slot.file_id in ids for slot in image.process.fds)]
        common = ancestry(holders[0].pid)
        for holder in holders[1:]:
            chain = set(ancestry(holder.pid))
            common = [pid for pid in common if pid in chain]
        return common[0], holders[0]

    openers: dict[int, list[spawn.Made]] = {}
    for entry in tree.files:
        if entry.kind not in MADE_KINDS:
            opener, first = common_ancestor({entry.id})
            openers.setdefault(opener, []).append(spawn.SharedOpen(entry, slots[entry.id], first.creds, first.pid))
    ends: dict[int, list[FileEntry]] = {}
    for entry in tree.files + tuple(e for image in checkpoint.processes for e in image.process.files):
        if entry.kind in pipe_kind.PIPE_KINDS:
            ends.setdefault(entry.pipe, []).append(entry)
    for made in tree.pipes:
        opener, first = common_ancestor({entry.id for entry in ends[made.id]})
        openers.setdefault(opener, []).append(
            spawn.PipeOpen(made, tuple((entry, slots[entry.id]) for entry in ends[made.id]), first.creds, first.pid,
                           tuple(caller_ends.get(made.id, {}).items())))
    held: dict[int, list[FileEntry]] = {}
    for entry in tree.files + tuple(e for image in checkpoint.processes for e in image.process.files):
        if entry.kind is FdKind.UNIX:
            held.setdefault(entry.socket, []).append(entry)
        if entry.kind in (FdKind.MEMFD, FdKind.DELETED):
            opener, first = common_ancestor({entry.id})
            openers.setdefault(opener, []).append(
                spawn.UnlinkedOpen(entry, slots[entry.id], shmem_fds[entry.shmem], first.pid))
    for pair in unix_kind.groups(tree.sockets):
        entries = [entry for member in pair for entry in held[member.id]]
        opener, first = common_ancestor({entry.id for entry in entries})
        openers.setdefault(opener, []).append(
            spawn.SocketOpen(tuple(pair), tuple((entry, slots[entry.id]) for entry in entries), first.creds,
                             first.pid))
    return openers


def plan_vdso(process: Process, vdso_image: bytes | None, mode: VdsoMode, running: RunningVdso) -> VdsoPlan | None:
    """Remap the running vDSO or proxy the dumped one (runtime/vdso.py decides)."""
    if process.vdso is None:
        return None
    plan = plan_restore(process, vdso_image, mode, [(r.start, r.end) for r in target_ranges(process)], running)
    log.info("pid %d: vdso %s: %s", process.pid, plan.decision.path.value, plan.decision.reason)
    return plan


def check_restorable(checkpoint: loader.Checkpoint, stand_ins: tuple[sessions.StandIn, ...], shell_job: bool,
                     detach: bool) -> None:
    """What would make the restore fail half-way, refused before anything is created."""
    tree = checkpoint.tree
    for image in checkpoint.processes:
        table.check(image.process.files, names.process_file(image.process.pid))  # each file kind's own checks
        table.check_open_order(image.process, tree.files, names.process_file(image.process.pid))
    table.check(tree.files, names.TREE)
    unix_kind.check(tree.sockets, names.TREE)
    root = checkpoint.root.process
    if detach and root.controls.pdeath_signal:
        number = root.controls.pdeath_signal
        name = signal.Signals(number).name if number in set(signal.Signals) else f"signal {number}"
        raise RestoreError(root.pid, f"has a parent-death signal ({name}): this command becomes its parent, "
                                     "so -d would deliver it at once; restore without -d")
    for pid in [node.pid for node in tree.processes] + [stand_in.pid for stand_in in stand_ins]:
        if os.path.exists(f"/proc/{pid}"):
            raise RestoreError(pid, f"pid is in use: {describe_holder(pid)}")
    for image in checkpoint.processes:
        process = image.process
        for thread in created_threads(process):
            if os.path.exists(f"/proc/{thread.tid}"):
                raise RestoreError(process.pid, f"thread id {thread.tid} is in use: {describe_holder(thread.tid)}")
        inherited = table.inherited_fds(process)
        if inherited and not shell_job:
            raise RestoreError(process.pid, f"fds {inherited} are a shell job's stdio: restore with --shell-job")
        rseq.check_kernel_supports(process)
    segments = [obj for obj in tree.shared_memory if obj.sysv is not None]
    if segments:
        listed = sysvipc.read_shm()
        for obj in segments:
            sysv.check_free(obj, _attacher(checkpoint, obj.id), listed)
        posix_timers.check_kernel_supports(process)


def external_pipe_ends(checkpoint: loader.Checkpoint,
                       inherit_fds: tuple[inherit.InheritFd, ...]) -> dict[int, dict[bool, int]]:
    """The caller's descriptor of each end of each external pipe the tree holds: pipe id -> {reading: fd}.

    A RestoreError, before anything is made, for an end no --inherit-fd gives.
    """
    external = {made.id for made in checkpoint.tree.pipes if made.external}
    ends: dict[int, dict[bool, int]] = {}
    for image in checkpoint.processes:
        entries = table.entries_by_id(image.process, checkpoint.tree.files)
        for slot in image.process.fds:
            entry = entries[slot.file_id]
            if entry.kind is FdKind.PIPE and entry.pipe in external:
                reading = pipe_kind.is_read_end(entry)
                ends.setdefault(entry.pipe, {})[reading] = inherit.caller_pipe_end(
                    inherit_fds, entry.pipe, reading, image.process.pid, slot.fd)
    for unused in sorted({given.pipe for given in inherit_fds} - external):
        log.warning("--inherit-fd names %s, which is no external pipe of the image", inherit.pipe_name(unused))
    return ends


def capped_rlimits(process: Process) -> tuple[RLimit, ...]:
    """The dumped limits, each hard limit capped at ours: raising one needs CAP_SYS_RESOURCE."""
    capped = []
    for resource_id, limit in enumerate(process.rlimits):
        _, our_max = resource.getrlimit(resource_id)
        our_max = (1 << 64) - 1 if our_max == resource.RLIM_INFINITY else our_max
        hard = min(limit.max, our_max)
        if hard != limit.max:
            log.warning("pid %d: rlimit %d hard limit %d capped at %d", process.pid, resource_id, limit.max, hard)
        capped.append(RLimit(min(limit.cur, hard), hard))
    return tuple(capped)


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def wait_relaying_signals(pid: int, to: int | None = None) -> int:
    """Wait for our child pid, the restored process or (--new-pid) what holds it; SIGINT, SIGTERM, SIGHUP and
    SIGQUIT sent to us go to the restored process, to (default: pid)."""
    target = pid if to is None else to
    previous = {sig: signal.signal(sig, lambda sig, _frame: os.kill(target, sig)) for sig in RELAYED_SIGNALS}
    # Any of them the caller held blocked until now is delivered here, to the handlers.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED_SIGNALS)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
