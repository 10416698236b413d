"""A dump whose runtime is SIGKILLed at any step of infection or cure, or at a random instant, never harms its target.

Each test runs the real command (`python -m runtime dump -t PID -D DIR`) as a
subprocess against the kill_safety target, which checks its own registers
(zmm0-31, k2-k7, rbx, r12-r15) and signal mask in a loop and prints CORRUPT
if any changed. The runtime kills itself at a named step (REVIVE_FAULT=step:die)
or is killed by the test a random 0-25 ms after it logged the start of the
dump (about the time a whole dump of this target takes). Afterwards, once the
kernel has detached the target (TracerPid 0): it is alive and progressing,
its registers never changed, its SigBlk, fds and maps are what they were
(or carry only a parasite area or its fd named revive-parasite, which the
next dump removes), and a second dump and restore of it works.
"""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dump_support import ROOT, Target, start_target, target_path
from restore_support import Restorable, wait_for
from runtime import faults
from runtime.images import names as layout
from runtime.infect import session as infect, remote_syscall
from runtime.infect.session import is_leftover

INJECTED_SYSCALLS = 5  # memfd_create, ftruncate, mmap, close; munmap at cure
RANDOM_BUDGET = 30.0  # seconds of random kills
RANDOM_WINDOW = 0.025  # a whole dump of the target takes about this long after its first log line
PER_CALL = ("infect.syscall", "infect.syscall_exit")
STEPS = [step for step in faults.INFECT_STEPS if step not in PER_CALL] + [
    f"{step}@{n}" for step in PER_CALL for n in range(1, INJECTED_SYSCALLS + 1)]
MODES = {"default": [], "leave-running": ["--leave-running"]}


THREADS = 4  # the multi-threaded target's: the parasite runs in threads 2..4 in turn


def target_argv(workdir: Path, threads: int = 1) -> list[str]:
    return [str(target_path("kill_safety")), str(workdir / "file"), str(threads)]


def thread_masks(pid: int) -> dict[str, str]:
    return {tid: status_field(int(tid), "SigBlk") for tid in os.listdir(f"/proc/{pid}/task")}


def status_field(pid: int, name: str) -> str:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(name + ":"):
            return line.split()[1]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def fds(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def maps(pid: int) -> set[str]:
    return set(open(f"/proc/{pid}/maps").read().splitlines())


def observe(pid: int) -> tuple[str, dict[int, str], set[str]]:
    return status_field(pid, "SigBlk"), fds(pid), maps(pid)


def ticks(out: Path) -> int:
    return out.read_text().count("tick\n")


def dump_command(pid: int, images: Path, mode: str, fault: str | None = None,
                 verbose: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    argv = [sys.executable, "-m", "runtime", "dump", "-t", str(pid), "-D", str(images), *MODES[mode]]
    return subprocess.Popen(argv + (["-v"] if verbose else []), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check_unharmed(target: Target, before: tuple[str, dict[int, str], set[str]]) -> int:
    """The target after its runtime died: unharmed; returns how many leftovers (area, fd) it carries."""
    pid = target.pid
    wait_for(lambda: status_field(pid, "TracerPid") == "0", timeout=5, what=f"the kernel to detach {pid}")
    assert target.alive(), target.out.read_text()[-200:]
    count = ticks(target.out)
    wait_for(lambda: ticks(target.out) > count + 1, timeout=5, what=f"{pid} to make progress")
    assert "CORRUPT" not in target.out.read_text()
    mask, fds_before, maps_before = before
    mask_after, fds_after, maps_after = observe(pid)
    assert mask_after == mask
    extra_fds = {fd: link for fd, link in fds_after.items() if fds_before.get(fd) != link}
    assert all(fd not in fds_before and is_leftover(link) for fd, link in extra_fds.items()), extra_fds
    assert set(fds_before) <= set(fds_after)
    assert maps_before <= maps_after, maps_before - maps_after
    extra_maps = maps_after - maps_before
    assert all(is_leftover(line.split(maxsplit=5)[5]) for line in extra_maps), extra_maps
    return len(extra_fds) + len(extra_maps)


def check_dumped_and_restored(subject: Restorable) -> None:
    """A dump (which removes any leftover) and a restore of the target work, and the restored one runs."""
    subject.dump()
    subject.restore()
    count = ticks(subject.out)
    wait_for(lambda: ticks(subject.out) > count + 1, timeout=5, what="the restored target to make progress")
    assert "CORRUPT" not in subject.out.read_text()
    assert not any(is_leftover(link) for link in fds(subject.pid).values())
    assert not any(is_leftover(line.split(maxsplit=5)[5]) for line in maps(subject.pid) if len(line.split()) == 6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("step", STEPS)
def test_target_unharmed_when_the_runtime_dies_at_step(step, mode, tmp_path):
    subject = Restorable(target_argv(tmp_path), tmp_path)
    try:
        before = observe(subject.pid)
        runtime = dump_command(subject.pid, tmp_path / "killed", mode, f"{step}:die")
        _, stderr = runtime.communicate(timeout=30)
        assert runtime.returncode == -signal.SIGKILL, f"{step} not reached: {stderr}"
        leftovers = check_unharmed(subject.target, before)
        print(f"\n{step} {mode}: unharmed, {leftovers} leftover area or fd")
        check_dumped_and_restored(subject)
    finally:
        subject.stop()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("thread", range(1, THREADS))
@pytest.mark.parametrize("ending", ["fails", "dies"])
def test_every_thread_unharmed_when_the_parasite_run_in_thread_k_fails_or_its_runtime_dies(ending, thread, mode,
                                                                                          tmp_path):
    subject = Restorable(target_argv(tmp_path, THREADS), tmp_path)
    try:
        before, masks = observe(subject.pid), thread_masks(subject.pid)
        fault = f"{faults.THREAD_STEPS[0]}@{thread}" + (":die" if ending == "dies" else "")
        runtime = dump_command(subject.pid, tmp_path / "failed", mode, fault)
        _, stderr = runtime.communicate(timeout=30)
        if ending == "dies":
            assert runtime.returncode == -signal.SIGKILL, f"{fault} not reached: {stderr}"
        else:
            assert runtime.returncode == 1 and f"injected failure at step {faults.THREAD_STEPS[0]}" in stderr, stderr
        leftovers = check_unharmed(subject.target, before)
        assert thread_masks(subject.pid) == masks
        if ending == "fails":
            assert leftovers == 0, "a runtime that lived cured the target"
        check_dumped_and_restored(subject)
        assert thread_masks(subject.pid) == masks
    finally:
        subject.stop()


@pytest.mark.parametrize("threads, budget", [(1, RANDOM_BUDGET), (THREADS, RANDOM_BUDGET / 2)],
                         ids=["one-thread", "four-threads"])
def test_target_unharmed_when_the_runtime_dies_at_random_instants(threads, budget, tmp_path):
    rng = random.Random(int(os.environ.get("REVIVE_KILL_SEED", "10")))
    target = start_target(target_argv(tmp_path, threads), tmp_path)
    tries = killed = completed = leftovers = 0
    try:
        before, masks = observe(target.pid), thread_masks(target.pid)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            mode = rng.choice(list(MODES))
            runtime = dump_command(target.pid, tmp_path / f"images-{tries}", mode, verbose=True)
            runtime.stderr.readline()  # "dumping pid ..." : the runtime is about to seize
            time.sleep(rng.uniform(0, RANDOM_WINDOW))
            runtime.send_signal(signal.SIGKILL)
            runtime.communicate(timeout=30)
            tries += 1
            # A default-mode dump killed after its inventory was written may have killed its target.
            finished = (tmp_path / f"images-{tries - 1}" / layout.INVENTORY).exists()
            if runtime.returncode == 0 or (finished and mode == "default"):
                completed += 1
                if mode == "default":  # dumped and killed as asked: go on with a new target
                    target.stop()
                    target = start_target(target_argv(tmp_path, threads), tmp_path)
                    before, masks = observe(target.pid), thread_masks(target.pid)
                continue
            assert runtime.returncode == -signal.SIGKILL
            killed += 1
            leftovers += bool(check_unharmed(target, before))
            assert thread_masks(target.pid) == masks
    finally:
        target.stop()
    print(f"\nrandom kills ({threads} threads): {tries} tries, {killed} runtimes killed mid-dump, "
          f"all {killed} targets unharmed "
          f"({leftovers} with a leftover area or fd), {completed} dumps completed first")
    assert killed >= tries // 2


# A runtime that hides the process's `syscall; ret` (as for a process that has none), starts the
# parasite and dies while it runs: the parasite can then only return, not unmap itself.
RUNTIME_WITHOUT_SYSCALL_RET = """
import dataclasses, os, signal, sys
from runtime.infect import session as infect, remote_syscall
found = remote_syscall.find_gadgets
remote_syscall.find_gadgets = lambda pid: dataclasses.replace(found(pid), syscall_ret=0)
with infect.infect(int(sys.argv[1])) as parasite:
    parasite.noop()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_area_the_parasite_could_not_unmap_is_removed_by_the_next_infection(tmp_path, monkeypatch):
    target = start_target(target_argv(tmp_path), tmp_path)
    try:
        before = observe(target.pid)
        runtime = subprocess.run([sys.executable, "-c", RUNTIME_WITHOUT_SYSCALL_RET, str(target.pid)], cwd=ROOT)
        assert runtime.returncode == -signal.SIGKILL
        assert check_unharmed(target, before) == 1  # the area
        found = remote_syscall.find_gadgets
        monkeypatch.setattr(remote_syscall, "find_gadgets", lambda pid: replace(found(pid), syscall_ret=0))
        with infect.infect(target.pid) as parasite:
            parasite.noop()
        # The leftover is gone, and without the gadget the runtime unmapped this infection's area.
        assert observe(target.pid) == before
        assert check_unharmed(target, before) == 0
    finally:
        target.stop()
