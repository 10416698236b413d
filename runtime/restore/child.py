"""The restoring child: from a copy of the runtime to a process about to enter the restorer.

Why these steps here and not in the restorer: opening files by path,
chdir/chroot and rlimits are easy and well-reported from Python and need
nothing the old address space lacks; the restorer (no libc) does what must
happen after the old memory is gone, and the credentials (creds.c), because
its own steps need the runtime's privileges the target may not have. The child
is a raw clone3 copy of the runtime (no fork handlers ran), forked into its
place in the tree by restore/spawn.py, so it starts no threads and ends in
the restorer or in os._exit; any failure is written as one line to its
error pipe, which the runtime turns into the RestoreError.

Order matters: the fds the restorer needs move above every target number
first (the tree's shared files, pipes and sockets are already above them,
where their maker put them), so reopening the target's descriptors cannot
clobber them; the
restorer area is mapped before rlimits (a lower RLIMIT_AS must not refuse
it).

What an image names is opened as the image's process would open it:
between the helper descriptors and the restorer area the child takes the
image's fsuid, fsgid and supplementary groups (acting_as), so the files
the process maps, its descriptors, its cwd and root are reached with its
own permissions, never with the runtime's (an image cannot make a root
restore open /etc/shadow read-write for a process that runs as nobody).
Each is looked at before it is opened (runtime/files/by_path.py): a FIFO would
block the open, a device's open has effects, so only the kind of file the
image says (a regular file, a directory, a character device, a FIFO opened
O_RDWR by its maker) is opened.
The pages file is not opened at all: the loader checked it, and the child
inherits that very descriptor.
"""

import contextlib
import ctypes
import errno
import os
import resource
import stat
from dataclasses import dataclass

from runtime import faults
from runtime.arch import x86_64 as arch
from runtime.errors import RestoreError, shorten
from runtime.files import by_path, table
from runtime.images.model import Creds, FileEntry, Process, RLimit
from runtime.kernel.libc import libc as _libc
from runtime.restore.restorer_args import Area, HelperFds
from runtime.task import controls as task_controls

CHILD_ERROR_TAG = b"child:"
# Below PIPE_BUF: the one write() of the message is atomic, and fits an empty pipe without blocking.
CHILD_ERROR_MAX = 1024

ARCH_GET_FS = 0x1003
RSEQ_FLAG_UNREGISTER = 1
RSEQ_SIG = 0x53053053  # glibc's x86 signature (sysdeps/unix/sysv/linux/x86/bits/rseq.h)

PROT_RWX = 0x7

_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)


@dataclass(frozen=True)
class ChildPlan:
    """Everything the child needs to become its process, computed by the runtime before the first fork."""

    process: Process
    pages_fd: int  # the pages file the loader opened and checked, inherited by the child
    fds: HelperFds
    area: Area
    rlimits: tuple[RLimit, ...]  # the dumped ones, hard limits capped at what this process may set
    shmem_fds: tuple[tuple[int, int], ...] = ()  # (SharedMemory.id, the runtime's fd of the object), inherited
    shared_files: tuple[FileEntry, ...] = ()  # the tree's shared entries (its fds may point at them)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def run(plan: ChildPlan, err_fd: int, rseq_len: int) -> None:
    """From a member of the tree in place (runtime/restore/spawn.py) into the restorer: never returns.

    err_fd: the write end of the error pipe it inherited; rseq_len: the length
    the runtime's glibc registered its rseq area with.
    """
    try:
        place_helper_fds(plan, err_fd)
        close_other_fds(plan)
        with acting_as(plan.process.creds):
            open_mapped_files(plan)
            reopen_target_fds(plan)
            set_fs_context(plan.process)
        map_restorer_area(plan.area)
        set_rlimits(plan.rlimits)
        set_identity(plan.process)
        task_controls.set_in_child(plan.process.pid, plan.process.controls)
        faults.point("restore.child")
        unregister_glibc_rseq(rseq_len)
        enter_restorer(plan.area)
    except Exception as exc:
        report_failure(exc, plan.fds.err if _is_open(plan.fds.err) else err_fd)
    finally:
        os._exit(1)


def report_failure(exc: Exception, fd: int) -> None:
    """One line for the runtime's RestoreError, which names our PID already."""
    own = isinstance(exc, RestoreError) and exc.pid == os.getpid()
    message = (exc.reason if own else _describe(exc)).encode(errors="replace")
    os.write(fd, (CHILD_ERROR_TAG + message)[:CHILD_ERROR_MAX])


def _describe(exc: Exception) -> str:
    """A failure no step named, in words: an OSError without Python's "[Errno N]"."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {shorten(str(exc.filename))}" if exc.filename is not None else exc.strerror
    return str(exc)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def place_helper_fds(plan: ChildPlan, err_fd: int) -> None:
    """The error pipe, the pages file, the shared memory objects and the exe at their planned numbers."""
    fds = plan.fds
    os.dup2(err_fd, fds.err, inheritable=False)
    os.close(err_fd)
    os.dup2(plan.pages_fd, fds.pages, inheritable=False)
    sources = dict(plan.shmem_fds)
    for shmem_id, fd in fds.shmem:
        os.dup2(sources[shmem_id], fd, inheritable=False)
    # With the runtime's credentials: a binary may be execute-only (0711), which exec maps
    # without read permission. The descriptor only names the exe for PR_SET_MM_MAP (which
    # checks exec permission) and is closed before the process runs.
    try:
        by_path.open_at(plan.process.mm.exe, os.O_RDONLY, stat.S_IFREG, fds.exe, False)
    except OSError as exc:
        raise RestoreError(os.getpid(), f"cannot open the exe {shorten(plan.process.mm.exe)}: "
                                        f"{exc.strerror}") from exc


# acting_as makes raw system calls, not glibc's wrappers: glibc makes setgroups process-wide by
# signalling every thread it knows, and this raw clone3 copy inherited the runtime's list of
# threads (and possibly a lock one of them held); the child is one thread, and the call is for it.
@contextlib.contextmanager
def acting_as(creds: Creds):
    """The image's fsuid, fsgid and groups for the opens in the block; the runtime's again after it.

    A non-zero fsuid also clears the file-system capabilities (CAP_DAC_OVERRIDE,
    CAP_FOWNER, ...) from the effective set, and fsuid 0 brings them back
    (capabilities(7), "Effect of user ID changes on capabilities"): in the block,
    permission checks are the target's own.
    """
    groups = os.getgroups()
    fsuid, fsgid = creds.uids[3], creds.gids[3]
    try:
        _set_groups(creds.groups, groups)
        _set_fs_id(arch.NR_SETFSGID, fsgid, "fsgid")
        _set_fs_id(arch.NR_SETFSUID, fsuid, "fsuid")
    except OSError as exc:
        raise RestoreError(os.getpid(), f"cannot take the image's file-system identity (fsuid {fsuid}, "
                                        f"fsgid {fsgid}, {len(creds.groups)} groups): {exc.strerror}") from exc
    try:
        yield
    finally:
        _set_fs_id(arch.NR_SETFSUID, os.geteuid(), "fsuid")
        _set_fs_id(arch.NR_SETFSGID, os.getegid(), "fsgid")
        _set_groups(groups, creds.groups)


def _set_groups(wanted, current) -> None:
    if sorted(wanted) == sorted(current):
        return  # nothing to change, and an unprivileged restore of its own user's process may not
    array = (ctypes.c_uint32 * max(len(wanted), 1))(*wanted)
    _check(_libc.syscall(arch.NR_SETGROUPS, len(wanted), array), "setgroups")


def _set_fs_id(number: int, wanted: int, name: str) -> None:
    # setfsuid/setfsgid report no error: they return the previous id. An invalid id
    # (-1) changes nothing and returns the current one, which says whether it took.
    _libc.syscall(number, ctypes.c_uint32(wanted))
    if _libc.syscall(number, ctypes.c_uint32(0xFFFFFFFF)) != wanted:
        raise OSError(errno.EPERM, f"setting {name} {wanted} did not take")


def open_mapped_files(plan: ChildPlan) -> None:
    for f in plan.fds.files:
        try:
            by_path.open_at(f.path, f.flags, stat.S_IFREG, f.fd, False)
        except OSError as exc:
            raise RestoreError(os.getpid(), f"cannot open {shorten(f.path)}, a file the process maps: "
                                            f"{exc.strerror}") from exc


def close_other_fds(plan: ChildPlan) -> None:
    """Everything but the helpers goes, except the caller's descriptors a shell job inherits."""
    keep = sorted(set(table.inherited_fds(plan.process)) | set(plan.fds.kept))
    low = 0
    for fd in keep:
        # Never an empty range: Python turns closerange(0, 0) into close_range(0, ~0),
        # which would close every descriptor, the helpers and the error pipe with them.
        if low < fd:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def reopen_target_fds(plan: ChildPlan) -> None:
    """The process's fd table, each open file by its kind (runtime/files/), shared ones dup'ed."""
    table.restore_table(plan.process, dict(plan.fds.shared), plan.shared_files)


def set_fs_context(process: Process) -> None:
    # chdir first: the dumped cwd is a path as seen from outside the process's root.
    for name, change in (("cwd", os.chdir), ("root", os.chroot)):
        path = getattr(process, name)
        if name == "root" and path == "/":
            continue
        try:
            change(path)
        except OSError as exc:
            raise RestoreError(process.pid, f"{name} {shorten(path)}: {exc.strerror}") from exc
    os.umask(process.umask)


def map_restorer_area(area: Area) -> None:
    """The area at its planned address; NOREPLACE turns a clash with our own memory into an error."""
    got = _libc.mmap(area.base, area.size, PROT_RWX, arch.MAP_PRIVATE | arch.MAP_ANONYMOUS | arch.MAP_FIXED_NOREPLACE, -1, 0)
    if got is None or got == ctypes.c_void_p(-1).value or got != area.base:
        err = ctypes.get_errno()
        raise RestoreError(os.getpid(), f"cannot map the restorer area at {area.base:#x}: {os.strerror(err)}")
    ctypes.memmove(area.base, area.image, len(area.image))


def set_rlimits(rlimits: tuple[RLimit, ...]) -> None:
    for resource_id, limit in enumerate(rlimits):
        cur = resource.RLIM_INFINITY if limit.cur >= (1 << 63) else limit.cur
        hard = resource.RLIM_INFINITY if limit.max >= (1 << 63) else limit.max
        try:
            resource.setrlimit(resource_id, (cur, hard))
        except (OSError, ValueError) as exc:
            raise RestoreError(os.getpid(), f"setrlimit({resource_id}, {limit.cur}, {limit.max}): {exc}") from exc


def set_identity(process: Process) -> None:
    """Personality: what the process sees of itself without exec having run.

    Each thread's name is a thread step of the restorer (set_thread_name);
    dumpability is the restorer's last credential step: a uid change resets it.
    """
    _check(_libc.personality(ctypes.c_ulong(process.personality)), "personality")


def unregister_glibc_rseq(length: int) -> None:
    """Our glibc's rseq area lives in memory the restorer unmaps; the kernel would fault writing it."""
    if not length:
        return
    offset = ctypes.c_long.in_dll(_libc, "__rseq_offset").value
    thread_pointer = ctypes.c_uint64()
    _check(_libc.syscall(arch.NR_ARCH_PRCTL, ARCH_GET_FS, ctypes.byref(thread_pointer)), "arch_prctl(ARCH_GET_FS)")
    area = thread_pointer.value + offset
    _check(_libc.syscall(arch.NR_RSEQ, ctypes.c_uint64(area), ctypes.c_uint32(length), RSEQ_FLAG_UNREGISTER,
                         ctypes.c_uint32(RSEQ_SIG)), f"rseq unregister of {area:#x} ({length} bytes)")


def enter_restorer(area: Area) -> None:
    entry = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_uint64)(area.entry)
    ret = entry(area.args)
    raise RestoreError(os.getpid(), f"the restorer returned {ret} instead of becoming the process")
