"""A process's POSIX timers as /proc/PID/timers names them.

Why this file: it is the one place the kernel lists a process's timers
(timer_create) from outside, with what the process asked for: the clock,
the signal and its sigev_value, and who is notified. When each fires
(timer_gettime) only the process itself can ask: the parasite does
(task/posix_timers.py).
"""

from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import read_text

# The kernel's sigev_notify values; SIGEV_THREAD_ID is a flag on SIGEV_SIGNAL ("signal/tid.N" in the file).
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
_NOTIFY_NAMES = {"signal": SIGEV_SIGNAL, "none": SIGEV_NONE, "thread": SIGEV_THREAD}


@dataclass(frozen=True)
class TimerEntry:
    id: int
    clock: int  # a clockid_t; negative for a CPU clock of a given process or thread (clock_getcpuclockid)
    signal: int
    sigev_value: int
    notify: int  # SIGEV_SIGNAL, SIGEV_NONE or SIGEV_THREAD, | SIGEV_THREAD_ID when one thread is signalled
    target: int  # the pid notified, or the tid with SIGEV_THREAD_ID


def read_timers(pid: int, view: int) -> tuple[TimerEntry, ...]:
    """The timers of pid, read through the live task view; ascending ids."""
    return parse_timers(pid, read_text(view, "timers"))


def parse_timers(pid: int, text: str) -> tuple[TimerEntry, ...]:
    """Each timer is four lines: 'ID: N', 'signal: SIG/VALUE', 'notify: KIND/pid.N or tid.N', 'ClockID: N'."""
    timers: list[TimerEntry] = []
    fields: dict[str, str] = {}
    for line in text.splitlines() + ["ID:"]:
        key, _, value = line.partition(":")
        if key == "ID" and fields:
            timers.append(_entry(pid, fields))
            fields = {}
        fields[key] = value.strip()
    return tuple(sorted(timers, key=lambda timer: timer.id))


def _entry(pid: int, fields: dict[str, str]) -> TimerEntry:
    try:
        signal, _, value = fields["signal"].partition("/")
        kind, _, target = fields["notify"].partition("/")
        scope, _, target_id = target.partition(".")
        if kind not in _NOTIFY_NAMES or scope not in ("pid", "tid"):
            raise ValueError(fields["notify"])
        notify = _NOTIFY_NAMES[kind] | (SIGEV_THREAD_ID if scope == "tid" else 0)
        return TimerEntry(id=int(fields["ID"]), clock=int(fields["ClockID"]), signal=int(signal),
                          sigev_value=int(value, 16), notify=notify, target=int(target_id))
    except (KeyError, ValueError) as exc:
        raise ProcfsError(pid, f"/proc/{pid}/timers: cannot parse timer {fields.get('ID', '?')}: {exc}") from None
