"""The checkpoint model: what a dump records and a restore consumes.

One frozen dataclass per concept (a Vma, a PageRun, a ThreadCore, ...), so
the /proc readers, the parasite results, the image files and the restore
all speak the same types. The image codec (images/codec.py) derives the
on-disk JSON from these declarations and validates against them, so a field
added here is written, read and checked without further code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

PAGE_SIZE = 4096

# Highest user address + 1 on x86_64 with 4-level paging (TASK_SIZE).
TASK_SIZE = 0x7FFFFFFFF000

NSIG = 64
NR_RLIMITS = 16
NR_ITIMERS = 3
# The clocks a POSIX timer of the process's own may count: REALTIME, MONOTONIC, PROCESS_CPUTIME_ID,
# THREAD_CPUTIME_ID, BOOTTIME, REALTIME_ALARM, BOOTTIME_ALARM, TAI.
TIMER_CLOCKS = frozenset({0, 1, 2, 3, 7, 8, 9, 11})
# sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, SIGEV_THREAD_ID 4 (a signal to one thread).
TIMER_NOTIFY = frozenset({0, 1, 2, 4})


class VmaKind(enum.Enum):
    """What a mapping is, as far as restore must treat it differently."""

    ANON = "anon"
    FILE = "file"
    HEAP = "heap"
    STACK = "stack"
    VDSO = "vdso"
    VVAR = "vvar"
    VVAR_VCLOCK = "vvar_vclock"
    SYSV = "sysv"  # a SysV shared memory attach (shmat): shmem names its segment, attached again with shmat


class VmaAdvice(enum.Enum):
    """A madvise(2) advice a mapping carried at dump (a VmFlags bit of smaps), applied again on restore.

    Only advice that leaves a lasting mark on the mapping and that a process
    sets itself; the kernel's own flags on its special mappings ([vvar] is
    always `dd`) come back when the kernel makes those mappings again.
    """

    DONTFORK = "dontfork"  # MADV_DONTFORK: a fork's child does not get the mapping
    WIPEONFORK = "wipeonfork"  # MADV_WIPEONFORK: a fork's child gets it zero-filled
    DONTDUMP = "dontdump"  # MADV_DONTDUMP: left out of core dumps
    HUGEPAGE = "hugepage"  # MADV_HUGEPAGE: back with transparent huge pages
    NOHUGEPAGE = "nohugepage"  # MADV_NOHUGEPAGE: never back with transparent huge pages
    MERGEABLE = "mergeable"  # MADV_MERGEABLE: KSM may merge its identical pages
    SEQUENTIAL = "sequential"  # MADV_SEQUENTIAL: aggressive read-ahead, pages dropped soon after use
    RANDOM = "random"  # MADV_RANDOM: no read-ahead


# The mappings the kernel makes and owns: a restore moves or recreates them, it never maps them.
KERNEL_MAPPING_KINDS = frozenset({VmaKind.VDSO, VmaKind.VVAR, VmaKind.VVAR_VCLOCK})


class FdKind(enum.Enum):
    """Which kind in runtime/files/ dumped an open file and brings it back (registry.py dispatches on it)."""

    FILE = "file"  # reopened by path with flags and offset
    CHR = "chr"  # a character device reopened by path (/dev/null-like)
    INHERIT = "inherit"  # --shell-job stdio: the restoring caller's own fd of that number
    PIPE = "pipe"  # one end of a pipe (pipe(2)): the pipe, its size and its data are the tree's (Tree.pipes)
    FIFO = "fifo"  # an open file of a FIFO (mkfifo), reopened by path: its pipe's data is the tree's too
    UNIX = "unix"  # a unix socket: the socket itself (type, peer, queued data) is the tree's (Tree.sockets)
    EVENTFD = "eventfd"  # eventfd(2): its counter and semaphore mode (FileEntry.eventfd)
    EPOLL = "epoll"  # epoll(7): its interest list (FileEntry.epoll), registered again after the process's other fds
    TIMERFD = "timerfd"  # timerfd_create(2): clock, settings, time left and expirations not yet read
    SIGNALFD = "signalfd"  # signalfd(2): the signals it reads (FileEntry.signalfd)
    MEMFD = "memfd"  # an open file of a memfd: the memfd itself is one of the tree's SharedMemory objects
    DELETED = "deleted"  # an open file of a regular file since deleted: its contents are a SharedMemory object
    INOTIFY = "inotify"  # an inotify instance: its watches (FileEntry.inotify)
    INET = "inet"  # a TCP or UDP socket, IPv4 or IPv6: addresses, options, queues (FileEntry.inet, docs/tcp.md)


class RseqCase(enum.Enum):
    """Which rule applied to a thread's rseq state at dump (issue: rseq)."""

    OUTSIDE = "outside"  # not inside a critical section
    ABORT = "abort"  # IP was inside; moved to abort_ip
    NO_RESTART = "no_restart"  # IP kept; rseq_cs written back after restore


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    prot: int  # PROT_READ | PROT_WRITE | PROT_EXEC
    shared: bool  # MAP_SHARED (else MAP_PRIVATE)
    kind: VmaKind
    growsdown: bool = False  # MAP_GROWSDOWN (the stack)
    path: str | None = None  # backing file for FILE mappings
    offset: int = 0  # file offset in bytes
    name: str = ""  # the pathname column of /proc/PID/maps, as the kernel printed it
    advice: tuple[VmaAdvice, ...] = ()  # madvise advice to apply again, in VmaAdvice declaration order
    shmem: int | None = None  # SharedMemory.id of a shared anonymous or deleted-file mapping: it maps that object
    sysv_readonly: bool = False  # SYSV: attached SHM_RDONLY (no VM_MAYWRITE): it can never be made writable

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PageRun:
    """nr_pages pages at vaddr, stored contiguously at offset in the pages file.

    Runs are sorted by vaddr and stored back to back, so restore reads the
    pages file sequentially straight into place.
    """

    vaddr: int
    nr_pages: int
    offset: int

    @property
    def size(self) -> int:
        return self.nr_pages * PAGE_SIZE


@dataclass(frozen=True)
class Registers:
    """struct user_regs_struct, field for field."""

    r15: int
    r14: int
    r13: int
    r12: int
    rbp: int
    rbx: int
    r11: int
    r10: int
    r9: int
    r8: int
    rax: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    orig_rax: int
    rip: int
    cs: int
    eflags: int
    rsp: int
    ss: int
    fs_base: int
    gs_base: int
    ds: int
    es: int
    fs: int
    gs: int


@dataclass(frozen=True)
class SigAltStack:
    sp: int
    size: int
    flags: int


@dataclass(frozen=True)
class RseqCs:
    """struct rseq_cs, the descriptor rseq_cs pointed to at dump."""

    version: int
    flags: int
    start_ip: int
    post_commit_offset: int
    abort_ip: int


@dataclass(frozen=True)
class Rseq:
    """A thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION) and its state at dump."""

    address: int
    size: int
    signature: int
    case: RseqCase = RseqCase.OUTSIDE
    rseq_cs: int = 0  # the value of (struct rseq).rseq_cs at dump
    cs: RseqCs | None = None


@dataclass(frozen=True)
class ThreadCore:
    """One thread's CPU and signal state; xstate bytes live in xstate-TID.img."""

    tid: int
    regs: Registers
    blocked: int  # signal mask, bit (sig - 1)
    altstack: SigAltStack
    clear_child_tid: int  # set_tid_address: zeroed and futex-woken when the thread exits
    pending: tuple[bytes, ...] = ()  # raw 128-byte siginfo of thread-private pending signals
    rseq: Rseq | None = None
    robust_list: int = 0  # set_robust_list head: robust futexes the kernel releases when the thread dies
    robust_list_len: int = 0
    comm: str = ""  # its name (/proc/PID/task/TID/comm, PR_SET_NAME)
    sched: SchedAttr | None = None  # its scheduling attributes, where they differ from the leader's
    cpus: tuple[int, ...] | None = None  # its CPU affinity, where it differs from the leader's
    io_priority: int | None = None  # its ioprio_get value, where it differs from the leader's
    in_syscall: int | None = None  # the syscall it was blocked in when dumped (orig_rax); None: in its own code


@dataclass(frozen=True)
class SigAction:
    handler: int
    flags: int
    restorer: int
    mask: int


@dataclass(frozen=True)
class ITimer:
    interval_sec: int
    interval_usec: int
    value_sec: int
    value_usec: int


@dataclass(frozen=True)
class PosixTimer:
    """A timer_create timer: made again with its id, armed with the time it had left (task/posix_timers.py)."""

    id: int
    clock: int  # CLOCK_REALTIME 0, MONOTONIC 1, PROCESS_CPUTIME_ID 2, THREAD_CPUTIME_ID 3, BOOTTIME 7, ...
    signal: int  # sigev_signo
    sigev_value: int  # the 64-bit value the signal carries (si_value)
    notify: int  # sigev_notify, one of TIMER_NOTIFY
    tid: int  # the thread signalled with SIGEV_THREAD_ID, else 0
    interval_sec: int  # timer_gettime at dump: the period, 0 for a one-shot timer
    interval_nsec: int
    value_sec: int  # the time left before it fires, 0 when disarmed
    value_nsec: int
    overrun: int  # timer_getoverrun at dump: not restored (the kernel cannot set it), shown by `show`


@dataclass(frozen=True)
class RLimit:
    cur: int
    max: int


@dataclass(frozen=True)
class Creds:
    uids: tuple[int, int, int, int]  # real, effective, saved, fs
    gids: tuple[int, int, int, int]
    groups: tuple[int, ...]
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    cap_bounding: int
    cap_ambient: int
    no_new_privs: bool = False


@dataclass(frozen=True)
class MmFields:
    """The fields prctl(PR_SET_MM, PR_SET_MM_MAP) sets."""

    start_code: int
    end_code: int
    start_data: int
    end_data: int
    start_brk: int
    brk: int
    start_stack: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    auxv: tuple[int, ...]  # (type, value) pairs flattened, ending with AT_NULL
    exe: str  # the /proc/PID/exe target


@dataclass(frozen=True)
class VdsoSymbol:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class VdsoInfo:
    """The dumped [vdso] and its vvar companions; the code itself is in vdso-PID.img."""

    vdso_start: int
    vdso_size: int
    sha256: str
    symbols: tuple[VdsoSymbol, ...]
    vvar_start: int | None = None
    vvar_size: int = 0
    vvar_vclock_start: int | None = None
    vvar_vclock_size: int = 0
    proxy: bool = False  # this [vdso] is a proxy this tool installed (a patched old vDSO)


@dataclass(frozen=True)
class FileNode:
    """The payload of a file reopened by path (regular files, directories, memory devices)."""

    path: str  # absolute, as /proc/PID/fd showed it at dump
    mode: int  # st_mode of the file: restore reopens only a file of the same type


@dataclass(frozen=True)
class Eventfd:
    """An eventfd's state, from /proc/PID/fdinfo."""

    count: int  # the counter, below 2**64 - 1
    semaphore: bool  # EFD_SEMAPHORE: a read takes 1, not the whole count


@dataclass(frozen=True)
class Timerfd:
    """A timerfd's clock and settings, when it fires next, and how often it fired unread."""

    clockid: int  # CLOCK_REALTIME 0, CLOCK_MONOTONIC 1, CLOCK_BOOTTIME 7, ... (the _ALARM ones too)
    settime_flags: int  # TFD_TIMER_ABSTIME 1, TFD_TIMER_CANCEL_ON_SET 2
    interval_ns: int  # 0: one-shot
    value_ns: int  # when it fires next: time left, or with TFD_TIMER_ABSTIME the clock's time then; 0: disarmed
    ticks: int  # expirations not yet read


@dataclass(frozen=True)
class EpollTarget:
    """One file an epoll instance watches: the process's fd of it, what for, and the data it reports."""

    fd: int  # its number in the process holding the epoll instance (fdinfo's tfd)
    events: int  # the events mask with EPOLLET, EPOLLONESHOT, ... (fdinfo's events)
    data: int  # the 64 bits epoll_wait reports with it


@dataclass(frozen=True)
class InotifyWatch:
    """One watch of an inotify instance: its descriptor, what it watches for, and the file it watches."""

    wd: int  # the watch descriptor the process knows it by
    mask: int  # IN_* events and flags (IN_ONESHOT, IN_EXCL_UNLINK, ...)
    path: str  # the watched file, found from its file handle at dump


class LockKind(enum.Enum):
    """Which kind of file lock (the /proc/locks and fdinfo names)."""

    FLOCK = "flock"  # flock(2): the open file description's
    POSIX = "posix"  # fcntl(F_SETLK): the process's, on a byte range
    OFD = "ofd"  # fcntl(F_OFD_SETLK): the open file description's, on a byte range


@dataclass(frozen=True)
class FileLock:
    """One lock an open file holds (fdinfo's "lock:" lines), taken again before the process runs."""

    kind: LockKind
    write: bool  # an exclusive (write) lock; else shared (read)
    start: int  # a range lock's first byte (0 for flock)
    length: int  # its bytes; 0: to the end of the file, however long it grows (fdinfo's EOF)
    pid: int = 0  # a POSIX lock's owner: the process that takes it again


@dataclass(frozen=True)
class FileEntry:
    """One open file description: what the kernel shares between the fds of a dup, or a fork.

    Its id is unique in the image (not only in the process): an entry held by
    several processes of a tree is one entry (Tree.files) their fds point at.
    """

    id: int
    kind: FdKind
    flags: int = 0  # open flags as /proc/PID/fdinfo reports them (octal there)
    pos: int = 0
    node: FileNode | None = None  # FILE, CHR and FIFO: the path reopened; INHERIT, PIPE: none
    pipe: int | None = None  # PIPE, FIFO: the Pipe.id it is an end of (read end if opened O_RDONLY, else write end)
    socket: int | None = None  # UNIX: the UnixSocket.id it is an open file of
    eventfd: Eventfd | None = None  # EVENTFD: its state
    epoll: tuple[EpollTarget, ...] | None = None  # EPOLL: its interest list, in the order fdinfo lists it
    timerfd: Timerfd | None = None  # TIMERFD: its state
    signalfd: int | None = None  # SIGNALFD: the mask of signals it reads, bit (sig - 1)
    shmem: int | None = None  # MEMFD, DELETED: the SharedMemory.id of its memfd or deleted file
    locks: tuple[FileLock, ...] = ()  # FILE: the locks it holds
    inotify: tuple[InotifyWatch, ...] | None = None  # INOTIFY: its watches, ascending descriptors
    inet: InetSocket | None = None  # INET: the socket


@dataclass(frozen=True)
class SocketOption:
    """A socket option a program set: its value where a new socket's differs (runtime/files/sockopts.py)."""

    name: str  # the option's constant: "SO_RCVTIMEO", "TCP_USER_TIMEOUT", "IP_TOS", ...
    value: tuple[int, ...] = ()  # a number or flag: (n,); a timeval: (seconds, microseconds); a linger: (on, seconds)
    text: str = ""  # a name's option: TCP_CONGESTION's algorithm, SO_BINDTODEVICE's interface (value then empty)


@dataclass(frozen=True)
class Datagram:
    """A datagram waiting in a UDP socket's receive queue, with the address it came from."""

    source: str  # the sender's address, as inet_ntop writes it
    source_port: int
    data: bytes


@dataclass(frozen=True)
class TcpRepair:
    """An established TCP connection as TCP_REPAIR reads it and writes it back (docs/tcp.md)."""

    state: str  # ESTABLISHED, or a closing one: FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING
    send_seq: int  # TCP_QUEUE_SEQ of the send queue: write_seq, after its last byte (and its FIN, if sent)
    recv_seq: int  # TCP_QUEUE_SEQ of the receive queue: rcv_nxt (after the peer's FIN, if received)
    send_queue: bytes  # written by the process, not yet acknowledged by the peer (sent or not); never a FIN
    unsent: int  # how many bytes at the end of send_queue were never sent (SIOCOUTQNSD, less a FIN not sent)
    recv_queue: bytes  # received, not yet read by the process
    mss: int  # TCP_MAXSEG
    snd_wscale: int  # the window scale the peer announced (tcpi_snd_wscale); 0 with wscale False
    rcv_wscale: int  # the window scale this end announced (tcpi_rcv_wscale)
    wscale: bool  # window scaling agreed (TCPI_OPT_WSCALE)
    sack: bool  # SACK permitted (TCPI_OPT_SACK)
    timestamps: bool  # timestamps agreed (TCPI_OPT_TIMESTAMPS)
    timestamp: int  # TCP_TIMESTAMP: this end's timestamp clock
    snd_wl1: int  # TCP_REPAIR_WINDOW, struct tcp_repair_window, field by field
    snd_wnd: int
    max_window: int
    rcv_wnd: int
    rcv_wup: int


@dataclass(frozen=True)
class InetSocket:
    """A TCP or UDP socket (IPv4 or IPv6), made again by the restoring child with its options and queues."""

    family: int  # AF_INET 2, AF_INET6 10
    type: int  # SOCK_STREAM 1 (TCP), SOCK_DGRAM 2 (UDP)
    state: str  # "unbound", "bound", "listening", "established" (TCP with tcp, or reset), "connected" (UDP)
    local: str  # the bound address ("" unbound), as inet_ntop writes it
    local_port: int
    remote: str  # the peer's address ("" none)
    remote_port: int
    backlog: int = 0  # a listening socket's listen() backlog
    # The options set that a new socket of its family and type has otherwise (SO_REUSEADDR, TCP_NODELAY,
    # SO_KEEPALIVE, TCP_KEEPIDLE, IPV6_V6ONLY, ...), in runtime/files/sockopts.py's order; buffer sizes apart.
    options: tuple[SocketOption, ...] = ()
    rcvbuf: int = 0  # SO_RCVBUF as getsockopt reports it, when it is not the default a new socket has; 0: default
    sndbuf: int = 0  # SO_SNDBUF, likewise
    shutdown: int = 0  # 1 receiving, 2 sending shut down (INET_DIAG_SHUTDOWN)
    tcp: TcpRepair | None = None  # an established connection dumped with --tcp-established
    reset: bool = False  # an established connection dumped with --tcp-close: restored as one the peer reset
    queue: tuple[Datagram, ...] = ()  # UDP: the datagrams waiting in its receive queue, oldest first


@dataclass(frozen=True)
class FdSlot:
    """One descriptor number of a process: which open file it holds, and its own close-on-exec bit."""

    fd: int
    file_id: int  # FileEntry.id; slots with one file_id share an open file description (dup, 2>&1)
    cloexec: bool = False


@dataclass(frozen=True)
class SchedAttr:
    """The scheduling state sched_getattr(2) reports and sched_setattr(2) takes back (struct sched_attr)."""

    policy: int  # SCHED_OTHER 0, FIFO 1, RR 2, BATCH 3, IDLE 5, DEADLINE 6
    flags: int  # SCHED_FLAG_* (RESET_ON_FORK 1)
    nice_rank: int  # 20 - nice, 1..40 (as the getpriority syscall counts): the image holds no negative numbers
    priority: int  # the real-time priority of FIFO/RR
    runtime: int  # the DEADLINE parameters, in ns
    deadline: int
    period: int
    util_min: int  # utilisation clamps, 0..1024
    util_max: int


@dataclass(frozen=True)
class TaskControls:
    """Settings of a task outside its memory, registers and signals: prctl options, scheduling, stop state.

    docs/state.md lists each with where it is read and how it is set back.
    """

    pdeath_signal: int  # PR_SET_PDEATHSIG, 0: none
    child_subreaper: bool  # PR_SET_CHILD_SUBREAPER
    timer_slack_ns: int  # PR_SET_TIMERSLACK
    thp_disabled: bool  # PR_SET_THP_DISABLE
    tsc_mode: int  # PR_SET_TSC: PR_TSC_ENABLE 1, PR_TSC_SIGSEGV 2
    mce_kill: int  # PR_MCE_KILL_GET's value: PR_MCE_KILL_DEFAULT 2, or LATE 0 / EARLY 1
    sched: SchedAttr
    cpus: tuple[int, ...]  # CPU affinity, ascending CPU numbers
    io_priority: int  # ioprio_get(IOPRIO_WHO_PROCESS): class << 13 | data
    oom_score_adj_rank: int  # /proc/PID/oom_score_adj + 1000, 0..2000 (the image holds no negative numbers)
    coredump_filter: int  # /proc/PID/coredump_filter
    stopped: bool  # group-stopped (SIGSTOP, ^Z) when dumped: restored stopped, SIGCONT continues it


@dataclass(frozen=True)
class Process:
    """Everything about one process except page data and xstate bytes."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    comm: str
    personality: int
    umask: int
    cwd: str
    root: str
    dumpable: int
    creds: Creds
    mm: MmFields
    rlimits: tuple[RLimit, ...]  # NR_RLIMITS entries, in RLIMIT_* order
    sigactions: tuple[SigAction, ...]  # NSIG entries, [i] is signal i + 1
    itimers: tuple[ITimer, ...]  # REAL, VIRTUAL, PROF
    posix_timers: tuple[PosixTimer, ...]  # ascending ids
    shared_pending: tuple[bytes, ...]  # raw 128-byte siginfo, process-wide pending
    vmas: tuple[Vma, ...]  # sorted by start, non-overlapping
    page_runs: tuple[PageRun, ...]  # sorted by vaddr, stored back to back
    fds: tuple[FdSlot, ...]  # ascending fd numbers
    files: tuple[FileEntry, ...]  # the open files only this process holds, ascending ids (shared ones: Tree.files)
    threads: tuple[ThreadCore, ...]  # threads[0] is the leader, unless leader_exited
    controls: TaskControls
    vdso: VdsoInfo | None = None
    shell_job: bool = False
    leader_exited: bool = False  # the leader called pthread_exit: a zombie while threads (none the pid) run


@dataclass(frozen=True)
class Extent:
    """length bytes at start in a shared memory object, stored at offset in its shmem-ID.img."""

    start: int
    length: int
    offset: int


@dataclass(frozen=True)
class SysvSegment:
    """What a SysV shared memory segment is besides its data: the ids and permissions shmctl(IPC_STAT) shows."""

    key: int  # the key it was made with, as maps names it (/SYSV%08x); 0: IPC_PRIVATE
    uid: int  # owner (IPC_SET)
    gid: int
    cuid: int  # creator: the effective ids of the shmget that made it
    cgid: int
    removed: bool = False  # SHM_DEST: IPC_RMID was done while attached; it goes with its last detach
    locked: bool = False  # SHM_LOCKED: SHM_LOCK keeps its pages in memory


@dataclass(frozen=True)
class SharedMemory:
    """Shared memory no file holds: one object however many mappings map it.

    MAP_SHARED|MAP_ANONYMOUS memory, or a file mapped shared and then deleted
    (sem_open + sem_unlink, shm_open + shm_unlink), or a SysV segment (shmget,
    made again with its id and attached with shmat, runtime/mm/sysv.py). A fork gives the child the
    parent's object, so the pages of both are one; a restore creates the
    object once (a deleted file: created at its name and unlinked again) and
    maps it into every process at every address a Vma with its id names.
    """

    id: int  # the object's inode number at dump (the maps inode column), unique in the image
    size: int  # bytes
    extents: tuple[Extent, ...]  # the parts holding data, ascending start, back to back in shmem-ID.img
    path: str | None = None  # a deleted file mapped shared (a POSIX semaphore, shm_open): its name; None: anonymous
    mode: int = 0  # that file's st_mode
    memfd: bool = False  # a memfd (path is /memfd:NAME), made again with memfd_create
    seals: int = 0  # a memfd's F_GET_SEALS
    sysv: SysvSegment | None = None  # a SysV segment (its id is the shmid, mode its permission bits), path None


@dataclass(frozen=True)
class Pipe:
    """A pipe of the tree: made once at restore, each of its ends (FileEntry) an open file of it."""

    id: int  # its inode number at dump (pipe:[ID], or the FIFO's), unique in the image
    size: int  # its capacity (F_GETPIPE_SZ), bytes
    data: bytes = b""  # what was written and not yet read at dump, oldest first
    path: str | None = None  # a FIFO's path; None: a pipe
    # Packet mode (O_DIRECT): each packet's length, in order, data their bytes; (): data is a stream of bytes.
    packets: tuple[int, ...] = ()
    # Named by dump --external: held outside the tree too, its ends the restoring caller's (--inherit-fd); no data.
    external: bool = False


@dataclass(frozen=True)
class UnixSocket:
    """A unix socket of the tree, made once at restore: with its peer (socketpair) when it has one."""

    id: int  # its inode number at dump (socket:[ID]), unique in the image
    type: int  # SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
    peer: int = 0  # the UnixSocket.id it is connected to; 0: none
    shutdown: int = 0  # what of it is shut down: 1 receiving, 2 sending (the kernel's sk_shutdown)
    queue: tuple[bytes, ...] = ()  # what waits in its receive queue, oldest first: one message each (a stream: one)
    rcvbuf: int = 0  # SO_RCVBUF as getsockopt reports it (the kernel doubles what setsockopt is given)
    sndbuf: int = 0  # SO_SNDBUF, likewise
    # The options set that a new socket of its type has otherwise (SO_PASSCRED, SO_RCVTIMEO, ...), in
    # runtime/files/sockopts.py's order.
    options: tuple[SocketOption, ...] = ()
    name: bytes = b""  # the address it is bound to: an absolute path, or NUL and an abstract name; empty: unbound
    mode: int = 0  # a path-bound socket's file mode (bind makes it under the umask)
    listening: bool = False
    backlog: int = 0  # a listening socket's listen() backlog
    listener: int = 0  # a connection accepted from a listening socket of the tree: that socket's id
    waiting: tuple[int, ...] = ()  # a listening socket's connections not yet accepted: their clients' ids, oldest first
    external: bytes = b""  # --ext-unix-sk: the name of the socket outside the tree it is connected to (again)


@dataclass(frozen=True)
class TreeProcess:
    """One process of the tree: its place (parent, group, session), and its exit status if it is a zombie."""

    pid: int
    ppid: int  # the parent's pid; for the root, a process outside the tree
    pgid: int
    sid: int
    comm: str
    zombie_status: int | None = None  # a zombie's wait status (exit code << 8, or the signal); None: process-PID.json

    @classmethod
    def of(cls, process: Process) -> TreeProcess:
        """A live process's place in the tree, as its record has it."""
        return cls(process.pid, process.ppid, process.pgid, process.sid, process.comm)


@dataclass(frozen=True)
class Tree:
    """The dumped process tree: who is whose child, and what its processes share."""

    processes: tuple[TreeProcess, ...]  # the root first; every parent before its children
    shared_memory: tuple[SharedMemory, ...] = ()  # ascending ids
    files: tuple[FileEntry, ...] = ()  # open files held by more than one process, ascending ids
    pipes: tuple[Pipe, ...] = ()  # every pipe an fd of the tree is an end of, ascending ids
    sockets: tuple[UnixSocket, ...] = ()  # every unix socket an fd of the tree is, ascending ids


@dataclass(frozen=True)
class Inventory:
    """The directory's table of contents and the facts a restore checks first."""

    format_version: int
    tool: str
    kernel_release: str
    xsave_features: int  # XCR0 of the dumping CPU (the xstate components present)
    xstate_size: int
    root_pid: int
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
