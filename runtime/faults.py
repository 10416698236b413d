"""Named failure points: a test makes one step of a dump or a restore fail, or the runtime die there.

Why: "a failed dump leaves the target running exactly as before" and "a
failed restore leaves no process behind" are promises about every step, and
only a test that really fails each step can keep them. The steps are named
here once (the tests iterate over these tuples); the code calls `point(name)`
where that step happens. Nothing happens unless the environment variable
REVIVE_FAULT names a step:

    REVIVE_FAULT=dump.infect            the step raises InjectedFault
    REVIVE_FAULT=dump.pages:die         the runtime SIGKILLs itself there
    REVIVE_FAULT=dump.thread@3          only the 3rd time this process reaches it (counting from 1)

The restorer's own steps (`restore.restorer.<step>`) are named after the
protocol's restorer_step enum and are checked inside the blob, which is told
the step to fail in its argument block (runtime/restore/restorer_args.py).
"""

import os
import signal

from runtime.errors import ReviveError

ENV = "REVIVE_FAULT"

DUMP_STEPS = (
    "dump.seize",  # every thread of every process of the tree stopped
    "dump.snapshot",  # /proc and ptrace read, refusals checked
    "dump.infect",  # the parasite is in and answers
    "dump.misc",  # parasite GET_MISC
    "dump.sigactions",  # parasite DUMP_SIGACTIONS
    "dump.thread",  # parasite DUMP_THREAD
    "dump.pages",  # page transfer started
    "dump.cure",  # the parasite is gone again
    "dump.write",  # a process's images written, inventory not yet (@N: the Nth process of the tree)
    "dump.shmem",  # the tree's shared memory objects saved, inventory not yet
    "dump.kill",  # the inventory is written; the target is about to be killed (or released)
)

# Reached only by a tree with established TCP connections dumped with --tcp-established.
NETWORK_STEPS = (
    "dump.network",  # the network lock is taken and every connection read in repair mode
)

# The parasite's infection and cure (runtime/remote_syscall.py, infect.py, channel.py);
# a runtime that dies at any of them must leave the target in its own state.
INFECT_STEPS = (
    "infect.parked",  # the leader's registers point at its own rt_sigreturn on the saved frame
    "infect.blocked",  # ... and every signal is blocked
    "infect.syscall",  # an injected syscall's entry stop, its number and arguments set (@N: the Nth)
    "infect.syscall_exit",  # an injected syscall's exit stop (@N: the Nth)
    "infect.memfd",  # the memfd exists, its fd open in the target
    "infect.mmap",  # the area is mapped in the target, the memfd's fd still open
    "infect.closed",  # the memfd's fd is closed; the parasite is not started
    "infect.start",  # the leader's registers point at the parasite, not yet continued
    "infect.command",  # a request is sent, its reply not yet read
    "infect.pages",  # page data is moving
    "infect.retire",  # the parasite is interrupted and its socket closed by the runtime
    "infect.cancelled",  # its final rt_sigreturn is cancelled: the leader is parked again
    "infect.restoring",  # the leader's mask and xstate are its own again, its registers not yet
    "infect.restored",  # its registers are its own again, the frame's stack bytes not yet
)

# The parasite run in a thread other than the leader (runtime/infect/thread_run.py); only a
# multi-threaded target reaches it.
THREAD_STEPS = (
    "infect.thread",  # that thread is parked and its registers point at the parasite (@N: the Nth thread)
)
RESTORE_STEPS = (
    "restore.validate",  # the image is loaded and checked
    "restore.clone",  # the processes are about to be created
    "restore.child",  # a restoring child reopened the files, before the restorer (in every process of the tree)
    "restore.handover",  # every restorer trapped; the tasks are about to be followed into their own context
)

RESTORER_PREFIX = "restore.restorer."


class InjectedFault(ReviveError):
    """A failure a test asked for; it travels the same paths as a real one."""

    def __init__(self, step: str):
        self.step = step
        super().__init__(f"injected failure at step {step} ({ENV})")


_reached: dict[str, int] = {}


def _wanted() -> tuple[str, str, int | None] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    spec, _, mode = spec.partition(":")
    step, _, nth = spec.partition("@")
    return step, mode, int(nth) if nth else None


def point(step: str) -> None:
    """Fail here (or die here) when REVIVE_FAULT names this step and this is the asked-for time."""
    wanted = _wanted()
    if wanted is None or wanted[0] != step:
        return
    if wanted[2] is not None:
        _reached[step] = _reached.get(step, 0) + 1
        if _reached[step] != wanted[2]:
            return
    if wanted[1] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(step)


def restorer_step() -> str | None:
    """The restorer step (lower-case enum name) a test asked the blob to fail, if any."""
    wanted = _wanted()
    if wanted is None or not wanted[0].startswith(RESTORER_PREFIX):
        return None
    return wanted[0][len(RESTORER_PREFIX):]
