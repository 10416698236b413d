"""`python -m runtime check`: every kernel feature the runtime relies on, each probed for real.

Why probe rather than compare kernel versions: distributions configure
features away (CONFIG_CHECKPOINT_RESTORE, CONFIG_USERFAULTFD, CONFIG_RSEQ)
or backport them, and capabilities, Yama's ptrace_scope or seccomp decide
as much as the kernel does. So each probe makes the very call the runtime
makes and reports the errno it got; a call that changes its caller (the mm
fields, the vDSO's place, how timer ids are chosen) or needs a traced task
is made on a child the probe starts and reaps. As `criu check` does: one
line per feature, ok or missing with the reason, and which part of the
tool needs it. The exit status is 1 only when something dump or restore
needs is missing; what only later commands need is reported but does not
fail the check.
"""

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from runtime.arch import x86_64 as arch
from runtime.errors import ReviveError
from runtime.images.cpu import current_xsave_features, describe_xsave_features
from runtime.infect import blobs
from runtime.kernel import ptrace
from runtime.kernel.clone import clone_with_pid
from runtime.kernel.libc import libc as _libc
from runtime.kernel.procfs import pagemap, stat, status
from runtime.mm import vdso
from runtime.task import rseq

DUMP = "dump"
RESTORE = "restore"
LAZY_RESTORE = "lazy restore (later)"
PRE_DUMP = "pre-dump (later)"
TCP = "--tcp-established"
PIDFDS = "pidfds (later)"
POSIX_TIMERS = "posix timers"
REQUIRED_BY = (DUMP, RESTORE)

PAGE_SIZE = mmap.PAGESIZE

# Capability bit numbers (include/uapi/linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_CHECKPOINT_RESTORE = 40

# Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) and constants newer
# than the installed headers or absent from Python's standard library.
NR_BRK = 12
NR_MREMAP = 25
NR_TIMER_CREATE = 222
NR_VMSPLICE = 278
NR_PROCESS_VM_READV = 310
NR_USERFAULTFD = 323
PR_SET_PDEATHSIG = 1
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_SET_MM_MAP_SIZE = 15
PR_TIMER_CREATE_RESTORE_IDS = 77
PR_TIMER_CREATE_RESTORE_IDS_ON = 1
PROT_NONE = 0  # not in Python's mmap module
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
TCP_REPAIR = 19
CLOCK_MONOTONIC = 1
EXE_FD_UNCHANGED = 0xFFFFFFFF  # prctl_mm_map.exe_fd (u32)-1: keep /proc/PID/exe
PROBE_TIMER_ID = 4242



class Missing(Exception):
    """The feature a probe asked for is not usable here; the message says why."""


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


UFFDIO_API = (3 << 30) | (ctypes.sizeof(_UffdioApi) << 16) | (UFFD_API << 8) | 0x3F  # _IOWR(0xAA, 0x3F, ...)


@dataclass(frozen=True)
class Result:
    """One probed feature: its line of `check`."""

    name: str
    needed_by: tuple[str, ...]
    ok: bool
    detail: str  # what was found (ok) or why it is missing

    @property
    def required(self) -> bool:
        return any(use in REQUIRED_BY for use in self.needed_by)


def _errno_text(err: int) -> str:
    return f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"


def _syscall(name: str, nr: int, *args) -> int:
    # Variadic: an int must be widened to a long, or the kernel reads garbage in the upper half.
    result = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return result


def _reap(pid: int) -> int:
    """waitpid until pid has exited (a traced child reports stops first); its wait status."""
    while True:
        _, wait_status = os.waitpid(pid, ptrace.__WALL)
        if os.WIFEXITED(wait_status) or os.WIFSIGNALED(wait_status):
            return wait_status


def _in_child(action: Callable[[], None]) -> None:
    """Run action in a forked child, which exits 0, or with the errno of the OSError it raised.

    For calls that change their caller for good: the mm fields, where the
    vDSO is, how timer_create chooses ids.
    """
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:
            code = 255
        os._exit(code)
    wait_status = _reap(pid)
    if os.WIFSIGNALED(wait_status):
        raise Missing(f"the probing child was killed by {signal.Signals(os.WTERMSIG(wait_status)).name}")
    code = os.WEXITSTATUS(wait_status)
    if code == 255:
        raise Missing("the probing child failed with a Python exception, not an errno")
    if code:
        raise Missing(_errno_text(code))


@contextlib.contextmanager
def _traced_child() -> Iterator[int]:
    """A forked child seized and stopped by PTRACE_INTERRUPT, as the dump stops its target; killed and reaped after."""
    pid = os.fork()
    if pid == 0:
        # Should the check itself be killed before it kills this child, the kernel does.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        while True:
            signal.pause()
    try:
        ptrace.seize(pid)
        ptrace.interrupt(pid)
        stop = ptrace.wait(pid)
        if not stop.is_event_stop:
            raise Missing(f"PTRACE_INTERRUPT did not stop the child: it {stop.describe()}")
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


# -- the probes: each returns what it found, or raises ---------------------------------------

def probe_ptrace_seize() -> str:
    with _traced_child() as pid:
        return f"child {pid} seized and stopped without a SIGSTOP"


def probe_ptrace_rseq_configuration() -> str:
    with _traced_child() as pid:
        conf = ptrace.get_rseq_configuration(pid)
    if not conf.address:
        return "works; the child had no rseq area registered"
    return f"the child's glibc area: {conf.size} bytes, signature {conf.signature:#x}"


def probe_rseq() -> str:
    if not rseq.kernel_has_rseq():
        raise Missing(f"rseq(2): {_errno_text(errno.ENOSYS)}")
    return "rseq(2) implemented"


def probe_capability() -> str:
    effective = status.read_status(os.getpid()).creds.cap_effective
    held = [name for bit, name in ((CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
            if effective >> bit & 1]
    if not held:
        raise Missing("neither CAP_CHECKPOINT_RESTORE nor CAP_SYS_ADMIN is in the effective set")
    return " and ".join(held)


def probe_clone3_set_tid() -> str:
    # A PID just freed is not handed out again until the PID space wraps, so it is free to ask for.
    scout = os.fork()
    if scout == 0:
        os._exit(0)
    _reap(scout)
    try:
        child = clone_with_pid(scout)
    except ReviveError as exc:
        raise Missing(str(exc)) from exc
    if child == 0:
        os._exit(0)
    _reap(child)
    return f"a child created as pid {scout}"


def probe_set_mm_map() -> str:
    mm_map_type = blobs.protocol().RestorerMmMap
    size = ctypes.c_uint()
    _syscall("prctl(PR_SET_MM_MAP_SIZE)", arch.NR_PRCTL, PR_SET_MM, PR_SET_MM_MAP_SIZE, ctypes.byref(size), 0, 0)
    if size.value != ctypes.sizeof(mm_map_type):
        raise Missing(f"the kernel's struct prctl_mm_map has {size.value} bytes, "
                      f"pie/protocol.toml's restorer_mm_map {ctypes.sizeof(mm_map_type)}")

    def set_the_same_map() -> None:
        now = stat.read_stat(os.getpid())
        mm_map = mm_map_type(start_code=now.start_code, end_code=now.end_code, start_data=now.start_data,
                             end_data=now.end_data, start_brk=now.start_brk, brk=_syscall("brk", NR_BRK, 0),
                             start_stack=now.start_stack, arg_start=now.arg_start, arg_end=now.arg_end,
                             env_start=now.env_start, env_end=now.env_end, exe_fd=EXE_FD_UNCHANGED)
        _syscall("prctl(PR_SET_MM_MAP)", arch.NR_PRCTL, PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(mm_map),
                 ctypes.sizeof(mm_map), 0)

    _in_child(set_the_same_map)
    return f"a child set its own mm fields again ({size.value}-byte map)"


def probe_memfd() -> str:
    os.close(os.memfd_create("revive-check", os.MFD_CLOEXEC))
    return "memfd_create works"


def probe_vmsplice_splice() -> str:
    pattern = bytes(range(256)) * (PAGE_SIZE // 256)
    source = ctypes.create_string_buffer(pattern, PAGE_SIZE)
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    sink = os.memfd_create("revive-check-splice", os.MFD_CLOEXEC)
    try:
        iov = _Iovec(ctypes.addressof(source), PAGE_SIZE)
        _syscall("vmsplice", NR_VMSPLICE, pipe_w, ctypes.byref(iov), 1, 0)
        moved = os.splice(pipe_r, sink, PAGE_SIZE)
        if moved != PAGE_SIZE or os.pread(sink, PAGE_SIZE, 0) != pattern:
            raise Missing(f"a page vmspliced and spliced arrived as {moved} bytes, not the page")
    finally:
        for fd in (pipe_r, pipe_w, sink):
            os.close(fd)
    return "a page went through a pipe into a file"


def probe_process_vm_readv() -> str:
    pattern = b"revive check " * 8
    source = ctypes.create_string_buffer(pattern, len(pattern))
    copy = ctypes.create_string_buffer(len(pattern))
    with _traced_child() as pid:
        local = _Iovec(ctypes.addressof(copy), len(pattern))
        remote = _Iovec(ctypes.addressof(source), len(pattern))  # the child is a fork: same address
        _syscall("process_vm_readv", NR_PROCESS_VM_READV, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if copy.raw != pattern:
        raise Missing("process_vm_readv returned other bytes than the child holds")
    return "read a stopped child's memory"


def probe_pagemap_scan() -> str:
    pages = 4
    area = mmap.mmap(-1, pages * PAGE_SIZE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(area))
    try:
        area[0] = area[2 * PAGE_SIZE] = 1  # two of the four pages present
        ranges = pagemap.scan(os.getpid(), start, start + pages * PAGE_SIZE)
    finally:
        del area  # unmapped when the last buffer export is gone
    present = sum(r.nr_pages for r in ranges if r.categories & pagemap.PAGE_IS_PRESENT)
    if present != 2:
        raise Missing(f"PAGEMAP_SCAN saw {present} present pages of 4 where 2 were written")
    return "one ioctl on /proc/self/pagemap found the present pages"


def probe_userfaultfd() -> str:
    uffd = _syscall("userfaultfd", NR_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | UFFD_USER_MODE_ONLY)
    try:
        api = _UffdioApi(api=UFFD_API)
        fcntl.ioctl(uffd, UFFDIO_API, api)
    finally:
        os.close(uffd)
    return f"UFFDIO_API handshake, features {api.features:#x}"


def probe_tcp_repair() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except PermissionError as exc:
            raise Missing(f"{_errno_text(exc.errno)}: TCP_REPAIR needs CAP_NET_ADMIN") from exc
    return "a socket entered repair mode"


def probe_pidfd() -> str:
    os.close(os.pidfd_open(os.getpid()))
    return "pidfd_open works"


def probe_timer_restore_ids() -> str:
    def create_with_chosen_id() -> None:
        _syscall("prctl(PR_TIMER_CREATE_RESTORE_IDS)", arch.NR_PRCTL, PR_TIMER_CREATE_RESTORE_IDS,
                 PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0)
        timer_id = ctypes.c_int(PROBE_TIMER_ID)
        _syscall("timer_create", NR_TIMER_CREATE, CLOCK_MONOTONIC, None, ctypes.byref(timer_id))
        if timer_id.value != PROBE_TIMER_ID:
            raise OSError(errno.EINVAL, f"timer_create gave id {timer_id.value}")

    _in_child(create_with_chosen_id)
    return f"a child created timer id {PROBE_TIMER_ID} by choice"


def probe_vdso() -> str:
    running = vdso.read_running_vdso()

    def move_the_block() -> None:
        # After this the child must not call into the vDSO (glibc keeps its old addresses): it only exits.
        free = _syscall("mmap", arch.NR_MMAP, None, ctypes.c_size_t(running.size), PROT_NONE,
                        mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        for piece in running.pieces:
            _syscall("mremap", NR_MREMAP, ctypes.c_void_p(piece.start), piece.size, piece.size,
                     MREMAP_MAYMOVE | MREMAP_FIXED, ctypes.c_void_p(free + piece.start - running.start))

    _in_child(move_the_block)
    names = " ".join(f"[{piece.kind.value}]" for piece in running.pieces)
    return f"{names} contiguous, moved by mremap in a child"


def probe_xsave() -> str:
    features = current_xsave_features()
    with _traced_child() as pid:
        area = ptrace.get_xstate(pid)
    return f"{describe_xsave_features(features)} (XCR0 user bits {features:#x}), ptrace xsave area {len(area)} bytes"


@dataclass(frozen=True)
class Probe:
    name: str
    needed_by: tuple[str, ...]
    run: Callable[[], str]


PROBES = (
    Probe("ptrace SEIZE/INTERRUPT", (DUMP, RESTORE), probe_ptrace_seize),
    Probe("PTRACE_GET_RSEQ_CONFIGURATION", (DUMP, RESTORE), probe_ptrace_rseq_configuration),
    Probe("rseq", (DUMP, RESTORE), probe_rseq),
    Probe("CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN", (RESTORE,), probe_capability),
    Probe("clone3 set_tid", (RESTORE,), probe_clone3_set_tid),
    Probe("PR_SET_MM_MAP", (RESTORE,), probe_set_mm_map),
    Probe("memfd_create", (DUMP,), probe_memfd),
    Probe("vmsplice/splice", (DUMP,), probe_vmsplice_splice),
    Probe("PAGEMAP_SCAN", (DUMP,), probe_pagemap_scan),
    Probe("vDSO layout and mremap", (RESTORE,), probe_vdso),
    Probe("xsave features", (DUMP, RESTORE), probe_xsave),
    Probe("process_vm_readv", (PRE_DUMP,), probe_process_vm_readv),
    Probe("userfaultfd", (LAZY_RESTORE,), probe_userfaultfd),
    Probe("TCP_REPAIR", (TCP,), probe_tcp_repair),
    Probe("pidfd_open", (PIDFDS,), probe_pidfd),
    Probe("PR_TIMER_CREATE_RESTORE_IDS", (POSIX_TIMERS,), probe_timer_restore_ids),
)


def run_probe(probe: Probe) -> Result:
    try:
        return Result(probe.name, probe.needed_by, True, probe.run())
    except OSError as exc:
        reason = _errno_text(exc.errno) if exc.errno else str(exc)
        return Result(probe.name, probe.needed_by, False, f"{exc.filename}: {reason}" if exc.filename else reason)
    except (Missing, ReviveError) as exc:
        return Result(probe.name, probe.needed_by, False, str(exc))


def run_probes() -> tuple[Result, ...]:
    return tuple(run_probe(probe) for probe in PROBES)


def ready(results: tuple[Result, ...]) -> bool:
    """Everything dump and restore need is here."""
    return all(r.ok for r in results if r.required)


def format_lines(results: tuple[Result, ...]) -> list[str]:
    name_width = max(len(r.name) for r in results)
    use_width = max(len(", ".join(r.needed_by)) for r in results)
    lines = [f"{'ok' if r.ok else 'missing':<8} {r.name:<{name_width}}  "
             f"{', '.join(r.needed_by):<{use_width}}  {r.detail}" for r in results]
    blocking = [r.name for r in results if r.required and not r.ok]
    lines.append(f"dump and restore: missing {', '.join(blocking)}" if blocking
                 else "dump and restore: everything they need is here")
    return lines


def check(as_json: bool) -> int:
    """Probe everything, print one line per feature (or JSON); 0 if dump and restore can work, else 1."""
    results = run_probes()
    if as_json:
        print(json.dumps({"ready": ready(results),
                          "features": [{**asdict(r), "needed_by": list(r.needed_by), "required": r.required}
                                       for r in results]}, indent=2))
    else:
        print("\n".join(format_lines(results)))
    return 0 if ready(results) else 1
