"""Process ids and the mm fields from /proc/PID/stat, and /proc/PID/personality.

Why stat: it is where the kernel prints the mm_struct's layout fields
(start_code ... env_end) that prctl(PR_SET_MM_MAP) sets on restore; they
read as 0 unless the reader has ptrace access to the task, which the dump
has. Field numbers are proc(5)'s, 1-based, counted after the parenthesised
comm, which may itself contain spaces and parentheses.
"""

from dataclasses import dataclass

from runtime.errors import ProcfsError
from runtime.kernel.procfs.files import read_text

# proc(5) field numbers.
_STATE, _PPID, _PGRP, _SESSION, _FLAGS = 3, 4, 5, 6, 9
_START_CODE, _END_CODE, _START_STACK = 26, 27, 28
_START_DATA, _END_DATA, _START_BRK = 45, 46, 47
_ARG_START, _ARG_END, _ENV_START, _ENV_END = 48, 49, 50, 51
_EXIT_CODE = 52


@dataclass(frozen=True)
class Stat:
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    flags: int  # the task's PF_* flags
    start_code: int
    end_code: int
    start_stack: int
    start_data: int
    end_data: int
    start_brk: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    exit_code: int  # the wait status of a task that has exited (a zombie's), as waitpid would report it


def parse_stat(pid: int, text: str) -> Stat:
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ProcfsError(pid, f"/proc/{pid}/stat: no (comm) field in {text[:60]!r}")
    # rest[0] is field 3 (state).
    rest = text[close_paren + 1:].split()
    if len(rest) < _EXIT_CODE - 2:
        raise ProcfsError(pid, f"/proc/{pid}/stat: {len(rest) + 2} fields, expected at least {_EXIT_CODE}")

    def field(number: int) -> int:
        return int(rest[number - 3])

    return Stat(
        comm=text[open_paren + 1:close_paren],
        state=rest[0],
        ppid=field(_PPID), pgid=field(_PGRP), sid=field(_SESSION), flags=field(_FLAGS),
        start_code=field(_START_CODE), end_code=field(_END_CODE), start_stack=field(_START_STACK),
        start_data=field(_START_DATA), end_data=field(_END_DATA), start_brk=field(_START_BRK),
        arg_start=field(_ARG_START), arg_end=field(_ARG_END),
        env_start=field(_ENV_START), env_end=field(_ENV_END), exit_code=field(_EXIT_CODE),
    )


def read_stat(pid: int) -> Stat:
    return parse_stat(pid, read_text(pid, "stat"))


def read_thread_stat(pid: int, tid: int) -> Stat:
    """/proc/PID/task/TID/stat: a thread's view (its name and state; the process's ids and memory fields)."""
    return parse_stat(tid, read_text(pid, f"task/{tid}/stat"))


def read_thread_comm(pid: int, tid: int) -> str:
    """One thread's name (PR_SET_NAME, pthread_setname_np): /proc/PID/task/TID/comm without its newline."""
    return read_text(pid, f"task/{tid}/comm").removesuffix("\n")


def read_personality(pid: int) -> int:
    """The persona the kernel prints in hex in /proc/PID/personality."""
    text = read_text(pid, "personality").strip()
    try:
        return int(text, 16)
    except ValueError:
        raise ProcfsError(pid, f"/proc/{pid}/personality: not a hex number: {text!r}") from None
