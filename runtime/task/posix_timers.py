"""POSIX timers (timer_create): what the dump reads of them, what it refuses, and which pending signal a
restored timer delivers itself.

Why they need the parasite: /proc/PID/timers names each timer, its clock
and whom it signals with what value (kernel/procfs/timers.py), but when it
fires next and its period only timer_gettime tells, which answers the
owning process alone. The restorer makes each again with its own id
(prctl PR_TIMER_CREATE_RESTORE_IDS, pie/common/timers.c) and arms it
with the time it had left, so a timer frozen 10 s before firing fires
10 s after the restore, as the process's interval timers do.

A periodic timer whose signal is pending when the process is frozen is
not running: the kernel re-arms it only when that signal, its own queued
entry, is delivered. Its timer_gettime reads at least 1 ns left, so the
restored timer fires at once and queues its own signal; the dumped copy
of the pending signal is therefore not queued again, or the timer would
never be re-armed.

Refused: a timer on another process's or thread's CPU clock (a clockid
from clock_getcpuclockid), and one on CLOCK_THREAD_CPUTIME_ID in a process
with several threads (the restorer would count the time of the wrong
thread). Not restored: the overrun count, which no call sets; it reads 0
until the timer next overruns, and the time the process spent on the CPU
before the dump, which a CPU-clock timer counts from 0 again.
"""

import functools
import struct

from runtime.errors import DumpError, RestoreError
from runtime.images.model import TIMER_CLOCKS, PosixTimer, Process
from runtime.kernel.libc import libc
from runtime.kernel.procfs.timers import SIGEV_THREAD_ID, TimerEntry

CLOCK_THREAD_CPUTIME_ID = 3
PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET = 77, 2
SI_TIMER = -2
_SIGINFO_TIMER = struct.Struct("<iii4xi")  # si_signo, si_errno, si_code, then _timer.si_tid (the timer id)


def check(pid: int, timers: tuple[TimerEntry, ...], tids: list[int]) -> None:
    """Refuse the timers a restore could not make again, before the parasite runs."""
    for timer in timers:
        what = f"POSIX timer {timer.id}"
        if timer.clock not in TIMER_CLOCKS:
            raise DumpError(pid, f"{what} counts clock {timer.clock}, the CPU time of another process or "
                                 "thread (clock_getcpuclockid): not supported")
        if timer.clock == CLOCK_THREAD_CPUTIME_ID and len(tids) > 1:
            raise DumpError(pid, f"{what} counts the CPU time of the thread that made it, in a process of "
                                 f"{len(tids)} threads: not supported")
        if timer.notify & SIGEV_THREAD_ID and timer.target not in tids:
            raise DumpError(pid, f"{what} signals thread {timer.target}, not one of the process's: not supported")


def saved(timers: tuple[TimerEntry, ...], states: list) -> tuple[PosixTimer, ...]:
    """The image records: what /proc named, with the parasite's parasite_posix_timer for each, in order."""
    return tuple(
        PosixTimer(id=timer.id, clock=timer.clock, signal=timer.signal, sigev_value=timer.sigev_value,
                   notify=timer.notify, tid=timer.target if timer.notify & SIGEV_THREAD_ID else 0,
                   interval_sec=state.spec.interval_sec, interval_nsec=state.spec.interval_nsec,
                   value_sec=state.spec.value_sec, value_nsec=state.spec.value_nsec, overrun=state.overrun)
        for timer, state in zip(timers, states))


def refired_by_timer(info: bytes, timers: tuple[PosixTimer, ...]) -> bool:
    """Whether a pending siginfo is a periodic timer's own signal, which the restored timer queues itself."""
    _, _, code, timer_id = _SIGINFO_TIMER.unpack_from(info)
    return code == SI_TIMER and any(t.id == timer_id and (t.interval_sec or t.interval_nsec) for t in timers)


def check_kernel_supports(process: Process) -> None:
    """Refuse, before anything is forked, timers this kernel cannot give their ids back (Linux 6.16 can)."""
    if process.posix_timers and not kernel_restores_ids():
        raise RestoreError(process.pid, f"has {len(process.posix_timers)} POSIX timers and this kernel cannot "
                                        "create a timer with a given id (prctl PR_TIMER_CREATE_RESTORE_IDS)")


@functools.cache
def kernel_restores_ids() -> bool:
    """Whether prctl(PR_TIMER_CREATE_RESTORE_IDS) exists: asking for its state changes nothing."""
    return libc.prctl(PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0) >= 0
