"""`restore --new-pid`: the tree restored with every PID it had, inside a PID namespace of its own.

Why a namespace rather than other PIDs: a process knows its PID and TIDs
in more places than a restore can find (glibc's cached TID in each
thread's control block, an error-checking or robust mutex's owner, files
it wrote), so a copy under other PIDs would find them stale. Inside a new
PID namespace the dumped PIDs are free, so the ordinary restore runs there
unchanged and every process keeps its PID and TIDs (getpid() reads the
dumped one), while outside the copy has new PIDs: the original and several
copies of one image run side by side (kernel/namespaces.py).

How: this process forks a helper, which unshares a PID and a mount
namespace and forks the namespace's pid 1. That one mounts the namespace's
own /proc, runs the restore (detached), reports the root's PID to this
process through a pipe, and stays as the namespace's init: it reaps the
orphans, and when the root exits it exits with the root's status, which
ends the namespace with anything left in it, as a container's init does.
A restore that fails inside is reported through the same pipe, one line,
and the namespace goes with every process it had made: nothing is left.
This process then knows the root by its PID outside (the root's NSpid);
without -d it waits, relaying SIGINT, SIGTERM, SIGHUP and SIGQUIT to the
root, and returns its status.
"""

import logging
import os
import signal

from runtime.errors import RestoreError, ReviveError
from runtime.images import codec, names
from runtime.images.model import Inventory
from runtime.kernel import namespaces
from runtime.kernel.procfs.files import read_text
from runtime.restore import RELAYED_SIGNALS, restore, wait_relaying_signals  # the ordinary restore runs inside

log = logging.getLogger(__name__)


def restore_in_new_namespace(directory: str, detach: bool, **options) -> tuple[int, int]:
    """(the root's exit status, 0 with detach; the root's PID outside the namespace)."""
    report_r, report_w = os.pipe()
    # A signal the command is sent before it knows the root waits, and is relayed to the root once it does.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED_SIGNALS)
    try:
        helper = os.fork()
        if helper == 0:  # the child's side ends in os._exit
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(report_r)
            _helper(report_w, lambda: restore(directory, detach=True, **options))
        os.close(report_w)
        with os.fdopen(report_r, "rb") as report:
            said = report.read().decode(errors="replace")
        return _finish(directory, detach, helper, said)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _finish(directory: str, detach: bool, helper: int, said: str) -> tuple[int, int]:
    """What pid 1 said: the root's PID inside, or why the restore failed."""
    if not said.startswith("ok "):
        os.waitpid(helper, 0)
        said = said.removeprefix("error ").strip() or "the new PID namespace's init died before it said why"
        pid, _, reason = said.partition(": ")
        if pid.startswith("pid ") and pid[4:].isdigit():
            raise RestoreError(int(pid[4:]), reason)  # the inner restore's own message, as it said it
        raise RestoreError(_root_of(directory), said)
    inner_root = int(said.split()[1])
    root = _outside_pid(helper, inner_root)
    log.info("pid %d restored in a new PID namespace: pid %d outside", inner_root, root)
    if detach:
        return 0, root
    return wait_relaying_signals(helper, to=root), root


def _helper(report_w: int, run_restore) -> None:
    """The forked helper: unshare, fork the namespace's pid 1, and exit with its status."""
    status = 1
    try:
        namespaces.unshare_pid_and_mounts()
        init = os.fork()
        if init == 0:
            _init(report_w, run_restore)
        os.close(report_w)
        _quiet()  # it outlives the command with -d: the caller's stdio is not its to hold open
        _, wait_status = os.waitpid(init, 0)
        status = os.waitstatus_to_exitcode(wait_status) if os.WIFEXITED(wait_status) else 1
    except OSError as exc:
        os.write(report_w, f"error a new PID namespace: {exc.strerror or exc}".encode())
    finally:
        os._exit(status)


def _init(report_w: int, run_restore) -> None:
    """pid 1 of the namespace: its /proc, the restore, then an init's life until the root exits."""
    try:
        namespaces.mount_own_proc()
        run_restore()
        children = read_text(1, "task/1/children").split()
        root = int(children[0])
        os.write(report_w, f"ok {root}\n".encode())
        os.close(report_w)
        _quiet()
        while True:
            pid, status = os.wait()
            if pid == root:
                os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except ReviveError as exc:
        os.write(report_w, f"error {exc}".encode())
    except BaseException as exc:  # an init must never leave its namespace's processes without a word
        os.write(report_w, f"error {type(exc).__name__}: {exc}".encode())
    os._exit(1)


def _quiet() -> None:
    """stdin, stdout and stderr on /dev/null: what stays behind the command must not hold the caller's pipes or
    terminal (a caller reading the command's output to its end would wait for the namespace's end)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _outside_pid(helper: int, inner: int) -> int:
    """The PID outside of the namespace's process inner: the child of the helper's child (pid 1) whose NSpid ends
    with inner."""
    init = int(read_text(helper, f"task/{helper}/children").split()[0])
    for child in read_text(init, f"task/{init}/children").split():
        for line in read_text(int(child), "status").splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                return int(child)
    raise RestoreError(inner, "restored in a new PID namespace, but not found among its init's children")


def _root_of(directory: str) -> int:
    """The image's root PID, for a failure's message (0 when even the inventory cannot be read)."""
    try:
        with open(os.path.join(directory, names.INVENTORY), "rb") as f:
            return codec.loads(Inventory, f.read(), names.INVENTORY).root_pid
    except (OSError, ReviveError):
        return 0
