"""Restore of multi-threaded processes: every thread continues where it was, with its own state, waits and signals."""

import ctypes
import hashlib
import os
import shutil
import signal
import struct
import time
from collections import defaultdict

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, wait_for
from runtime.errors import DumpError
from runtime.images import loader
from runtime.kernel.libc import libc
from runtime.kernel.procfs.mem import read_memory

SYS_TGKILL = 234
SYS_READ, SYS_FUTEX, SYS_CLOCK_NANOSLEEP = 0, 202, 230
WORKERS = range(8)
TICKING = (0, 1, 2, 3, 5)  # restore_threads' workers 4, 6 and 7 wait (wake, deadline, feed) before they tick
PYTHON = "/usr/bin/python3"  # the system interpreter, whatever the venv's layout

PYTHON_COUNTERS = """
import itertools, os, threading, time
def count(i):
    with open(f"count-{i}.txt", "w", buffering=1) as f:
        for n in itertools.count():
            f.write(f"{n}\\n")
            time.sleep(0.02)
for i in range(4):
    threading.Thread(target=count, args=(i,), daemon=True).start()
print(f"ready pid={os.getpid()}", flush=True)
threading.Event().wait()
"""

# Threads come and go all the time while one thread counts in a file.
PYTHON_CHURN = """
import itertools, os, threading, time
def count():
    with open("count.txt", "w", buffering=1) as f:
        for n in itertools.count():
            f.write(f"{n}\\n")
            time.sleep(0.01)
threading.Thread(target=count, daemon=True).start()
print(f"ready pid={os.getpid()}", flush=True)
while True:
    batch = [threading.Thread(target=time.sleep, args=(0.002,)) for _ in range(4)]
    for t in batch:
        t.start()
    for t in batch:
        t.join()
"""

# One thread with its own CPU affinity, nice value and I/O priority (each set for the calling thread only).
PYTHON_OWN_SCHED = """
import ctypes, os, threading
def own():
    os.sched_setaffinity(0, {0})
    os.setpriority(os.PRIO_PROCESS, 0, 7)
    ctypes.CDLL(None).syscall(251, 1, 0, (2 << 13) | 6)  # ioprio_set(IOPRIO_WHO_PROCESS, self, BE/6)
    print(f"ready pid={os.getpid()} tid={threading.get_native_id()}", flush=True)
    threading.Event().wait()
threading.Thread(target=own).start()
threading.Event().wait()
"""
SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS = 252, 1

# Four threads each blocked in one kind of timed wait for WAIT_S seconds: poll, select, sleep (clock_nanosleep)
# and an Event wait (a futex wait with a timeout). Python retries each on EINTR with the time left.
WAIT_S = 3.0
PYTHON_TIMED_WAITS = f"""
import os, select, threading, time
def wait(name, call):
    start = time.monotonic()
    call()
    # One write per line: print() writes the text and its newline apart, and the threads share stdout.
    os.write(1, f"woke {{name}} {{time.monotonic() - start:.3f}}\\n".encode())
waits = {{
    "poll": lambda: select.poll().poll({WAIT_S} * 1000),
    "select": lambda: select.select([], [], [], {WAIT_S}),
    "sleep": lambda: time.sleep({WAIT_S}),
    "futex": lambda: threading.Event().wait({WAIT_S}),
}}
threads = [threading.Thread(target=wait, args=item) for item in waits.items()]
for t in threads:
    t.start()
print(f"ready pid={{os.getpid()}}", flush=True)
for t in threads:
    t.join()
print("done joined", flush=True)
"""

CHUNKS, ROUNDS = 16, 250_000  # about 3 s of sha256 rounds in all
PYTHON_POOL = f"""
import hashlib, os, sys
from concurrent.futures import ThreadPoolExecutor
def chunk(i):
    h = str(i).encode()
    for _ in range({ROUNDS}):
        h = hashlib.sha256(h).digest()
    sys.stdout.write(f"done {{i}}\\n")
    sys.stdout.flush()
    return h
print(f"ready pid={{os.getpid()}}", flush=True)
with ThreadPoolExecutor(4) as pool:
    digests = list(pool.map(chunk, range({CHUNKS})))
print("result", hashlib.sha256(b"".join(digests)).hexdigest(), flush=True)
"""


@pytest.fixture
def start(tmp_path):
    """start(argv) -> a Restorable waiting for its ready line in tmp_path; all killed and reaped afterwards."""
    started = []

    def start(*argv: str) -> Restorable:
        started.append(Restorable(list(argv), tmp_path))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def restore_threads(start, sleep: str = "3", reader: str = "nopipe") -> Restorable:
    return start(str(target_path("restore_threads")), sleep, reader)


def worker_tids(proc) -> list[int]:
    return [int(tid) for tid in proc.target.info["tids"].split(",")]


def ticks(proc) -> dict[int, list[list[str]]]:
    """Each thread's "tick I ..." lines as the words after I: [N], [N, "ok"] or [N, "bad", WHAT]."""
    seen = defaultdict(list)
    for words in lines(proc.out, "tick"):
        seen[int(words[1])].append(words[2:])
    return seen


def wait_ticks(proc, threads, more: int) -> None:
    start = {i: len(ticks(proc)[i]) for i in threads}
    wait_for(lambda: all(len(ticks(proc)[i]) >= start[i] + more for i in threads),
             what=f"{more} more ticks of threads {list(threads)}")


def check_sequences_continue(proc, threads, ok: bool = True) -> None:
    """Every tick line and counter-I.txt count 0, 1, 2, ... without gap or repeat (and every tick says ok)."""
    seen = ticks(proc)
    for i in threads:
        assert [int(words[0]) for words in seen[i]] == list(range(len(seen[i]))), f"thread {i} ticks: {seen[i]}"
        assert not ok or all(words[1:] == ["ok"] for words in seen[i]), f"thread {i}: {seen[i]}"
        counted = [int(n) for n in (proc.workdir / f"counter-{i}.txt").read_text().split()]
        assert counted == list(range(len(counted))), f"counter-{i}.txt has a gap or a repeat"


def tasks(pid: int) -> list[int]:
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))


def comms(pid: int) -> dict[int, str]:
    return {tid: open(f"/proc/{pid}/task/{tid}/comm").read().strip() for tid in tasks(pid)}


def status_field(pid: int, name: str, tid: int | None = None) -> str:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    return next(line.split(":", 1)[1].strip() for line in open(path) if line.startswith(name + ":"))


def has_signal(mask: str, sig: int) -> bool:
    return bool(int(mask, 16) >> (sig - 1) & 1)


def syscall_of(pid: int, tid: int) -> str:
    """The number of the syscall tid is blocked in, or "running"."""
    return open(f"/proc/{pid}/task/{tid}/syscall").read().split()[0]


def tgkill(pid: int, tid: int, sig: int) -> None:
    """A signal to one thread of another process (os.kill is process-directed, signal.pthread_kill ours only)."""
    if libc.syscall(SYS_TGKILL, pid, tid, int(sig)) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {sig})")


def signals_seen(proc, sig: int) -> list[tuple[int, str]]:
    """(tid, thread name) of every "signal SIG tid=TID name=NAME" line: the thread whose handler ran."""
    return [(int(words[2].removeprefix("tid=")), words[3].removeprefix("name="))
            for words in lines(proc.out, "signal") if words[1] == str(int(sig))]


def numbers(path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("reader", ["pipe", "nopipe"])
def test_restore_continues_every_thread_with_its_own_state_and_wait(start, reader):
    proc = restore_threads(start, "4", reader)
    tids = worker_tids(proc)
    deadline = int(lines(proc.out, "sleeper")[0][1].removeprefix("deadline_ns="))
    wait_ticks(proc, TICKING, 3)
    for worker, nr in ((4, SYS_FUTEX), (6, SYS_CLOCK_NANOSLEEP), (7, SYS_READ if reader == "pipe" else SYS_FUTEX)):
        wait_for(lambda: syscall_of(proc.pid, tids[worker]) == str(nr), what=f"worker {worker} blocked in {nr}")
    before, names = tasks(proc.pid), comms(proc.pid)
    proc.dump()
    proc.restore()
    assert time.monotonic_ns() < deadline, "the restore came after the sleeper's deadline: nothing to check"
    wait_ticks(proc, TICKING, 3)
    assert tasks(proc.pid) == before and comms(proc.pid) == names
    assert [names[tid] for tid in tids] == [f"worker-{i}" for i in WORKERS]
    assert not ticks(proc)[4] and not ticks(proc)[7], "the futex waiter and the reader stayed blocked"
    (proc.workdir / "wake").touch()
    assert wait_for(lambda: lines(proc.out, "woken"), what="worker 4 woken") == [["woken", "4", "1"]]
    (proc.workdir / "feed").touch()
    assert wait_for(lambda: lines(proc.out, "read"), what="worker 7 fed") == [["read", "7", "x"]]
    slept = wait_for(lambda: lines(proc.out, "slept"), what="the sleeper's deadline")
    late_ns = int(slept[0][1].removeprefix("late_ns="))
    assert abs(late_ns) < 1_000_000_000, "the sleeper woke neither early nor after sleeping again"
    wait_ticks(proc, WORKERS, 3)
    check_sequences_continue(proc, WORKERS)


def test_restore_keeps_a_thread_directed_signal_pending_on_its_thread(start):
    proc = restore_threads(start)
    tid2, rt2 = worker_tids(proc)[2], signal.SIGRTMIN + 2
    wait_ticks(proc, [2], 2)
    tgkill(proc.pid, tid2, rt2)
    wait_for(lambda: has_signal(status_field(proc.pid, "SigPnd", tid2), rt2), what="SIGRTMIN+2 pending on worker 2")
    proc.dump()
    proc.restore()
    assert has_signal(status_field(proc.pid, "SigPnd", tid2), rt2), "pending on worker 2 itself"
    assert not has_signal(status_field(proc.pid, "ShdPnd"), rt2), "not made process-directed"
    wait_ticks(proc, [2], 2)
    assert not signals_seen(proc, rt2)
    (proc.workdir / "unblock-2").touch()
    assert wait_for(lambda: signals_seen(proc, rt2), what="the SIGRTMIN+2 handler") == [(tid2, "worker-2")]
    wait_ticks(proc, [2], 2)
    check_sequences_continue(proc, [2])


def test_restore_delivers_process_directed_signals_to_threads_not_blocking_them(start):
    proc = restore_threads(start)
    tids = worker_tids(proc)
    wait_ticks(proc, TICKING, 2)
    proc.dump()
    proc.restore()
    names = comms(proc.pid)
    # SIGUSR2 is blocked in main and worker 1 only: with their masks restored, another worker takes it.
    os.kill(proc.pid, signal.SIGUSR2)
    [(tid, name)] = wait_for(lambda: signals_seen(proc, signal.SIGUSR2), what="the SIGUSR2 handler")
    assert tid in tids and tid != tids[1] and name == names[tid]
    os.kill(proc.pid, signal.SIGUSR1)
    [(tid, name)] = wait_for(lambda: signals_seen(proc, signal.SIGUSR1), what="the SIGUSR1 handler")
    assert name == names[tid]
    wait_ticks(proc, TICKING, 2)
    check_sequences_continue(proc, TICKING)


def test_restore_brings_back_a_process_whose_leader_exited(start):
    proc = start(str(target_path("leader_exit")))
    wait_for(lambda: status_field(proc.pid, "State") == "Z (zombie)", what="the leader to exit")
    wait_ticks(proc, range(3), 3)
    state, before = status_field(proc.pid, "State"), tasks(proc.pid)
    assert len(before) == 4 and proc.pid in before
    proc.dump()
    proc.restore()
    wait_ticks(proc, range(3), 5)
    assert status_field(proc.pid, "State") == state and tasks(proc.pid) == before
    check_sequences_continue(proc, range(3), ok=False)


def test_a_refusal_in_a_process_whose_leader_exited_names_the_process(start):
    proc = start(str(target_path("leader_exit")), "pidfd")
    wait_for(lambda: status_field(proc.pid, "State") == "Z (zombie)", what="the leader to exit")
    with pytest.raises(DumpError, match=rf"^pid {proc.pid}: fd 3 \(anonymous inode \[pidfd\]\): not supported yet"):
        proc.dump()
    wait_ticks(proc, range(3), 2)  # left running as it was


def read_counters(proc, n: int) -> tuple[int, ...]:
    return struct.unpack(f"{n}Q", read_memory(proc.pid, proc.target.addr("counters"), 8 * n))


@pytest.mark.slow
def test_restore_continues_all_of_1000_threads(start):
    proc = start(str(target_path("threads_many")), "1000")
    dumped = read_counters(proc, 1000)
    assert min(dumped) > 0
    proc.dump()
    proc.restore()
    restored = read_counters(proc, 1000)
    assert all(r >= d for r, d in zip(restored, dumped)), "a counter went back: the thread did not continue"
    wait_for(lambda: all(now > r for now, r in zip(read_counters(proc, 1000), restored)), timeout=20,
             what="every thread to count on")
    assert len(tasks(proc.pid)) == 1000


def test_restored_python_threads_continue_their_files(start):
    proc = start(PYTHON, "-c", PYTHON_COUNTERS)
    files = [proc.workdir / f"count-{i}.txt" for i in range(4)]
    wait_for(lambda: all(len(numbers(f)) >= 3 for f in files), what="every thread's first lines")
    proc.dump()
    dumped = [len(numbers(f)) for f in files]
    proc.restore()
    wait_for(lambda: all(len(numbers(f)) >= n + 10 for f, n in zip(files, dumped)), what="lines after the restore")
    for f in files:
        assert numbers(f) == list(range(len(numbers(f)))), f"{f.name} has a gap or a repeat"


def pool_result() -> str:
    digests = []
    for i in range(CHUNKS):
        h = str(i).encode()
        for _ in range(ROUNDS):
            h = hashlib.sha256(h).digest()
        digests.append(h)
    return hashlib.sha256(b"".join(digests)).hexdigest()


def test_restored_python_thread_pool_finishes_with_the_right_result(start):
    proc = start(PYTHON, "-c", PYTHON_POOL)
    wait_for(lambda: len(lines(proc.out, "done")) >= 4, what="the first chunks")
    proc.dump()
    assert len(lines(proc.out, "done")) < CHUNKS, "dumped after the work was done: nothing to check"
    proc.restore()
    expected = pool_result()  # meanwhile the restored pool works on
    result = wait_for(lambda: lines(proc.out, "result"), timeout=30, what="the pool's result")
    assert result == [["result", expected]]
    assert sorted(int(words[1]) for words in lines(proc.out, "done")) == list(range(CHUNKS))


def test_twenty_dumps_leaving_it_running_change_no_maps_threads_or_progress(start):
    proc = restore_threads(start, "0")
    (proc.workdir / "wake").touch()
    (proc.workdir / "feed").touch()
    wait_ticks(proc, WORKERS, 2)
    maps, before = open(f"/proc/{proc.pid}/maps").read(), tasks(proc.pid)
    for n in range(20):
        proc.images = proc.workdir / f"images-{n}"
        proc.dump(leave_running=True)
        assert open(f"/proc/{proc.pid}/maps").read() == maps, f"dump {n} left the maps changed"
        assert tasks(proc.pid) == before, f"dump {n} left the thread list changed"
        wait_ticks(proc, WORKERS, 1)
        shutil.rmtree(proc.images)
    check_sequences_continue(proc, WORKERS)


def test_threads_created_and_exiting_during_the_dump_are_in_the_image_whole_or_not_at_all(start):
    proc = start(PYTHON, "-c", PYTHON_CHURN)
    counter = proc.workdir / "count.txt"
    for n in range(10):
        proc.images = proc.workdir / f"images-{n}"
        proc.dump(leave_running=True)
        with loader.load(proc.images) as checkpoint:  # validates every thread's record and xstate
            assert len(checkpoint.root.process.threads) >= 2
        shutil.rmtree(proc.images)
    proc.images = proc.workdir / "images"
    proc.dump()
    dumped = len(numbers(counter))
    proc.restore()
    wait_for(lambda: len(numbers(counter)) >= dumped + 10, what="the counting thread after the restore")
    assert numbers(counter) == list(range(len(numbers(counter)))), "count.txt has a gap or a repeat"
    seen = set(tasks(proc.pid))
    wait_for(lambda: set(tasks(proc.pid)) - seen, what="the restored process to create threads again")


def own_sched(pid: int, tid: int) -> tuple[str, int, int]:
    """A thread's allowed CPUs, nice value and I/O priority."""
    nice = int(open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])
    return status_field(pid, "Cpus_allowed_list", tid), nice, libc.syscall(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, tid)


def test_a_thread_keeps_its_own_affinity_nice_value_and_io_priority(start):
    if os.cpu_count() < 2:
        pytest.skip("one CPU: a thread's own affinity cannot differ from the leader's")
    proc = start(PYTHON, "-c", PYTHON_OWN_SCHED)
    tid = int(proc.target.info["tid"])
    own, leader = own_sched(proc.pid, tid), own_sched(proc.pid, proc.pid)
    assert own == ("0", 7, (2 << 13) | 6) and leader != own
    proc.dump()
    proc.restore()
    assert own_sched(proc.pid, tid) == own and own_sched(proc.pid, proc.pid) == leader


def test_a_stopped_process_comes_back_with_every_thread_stopped_and_sigcont_resumes_them(start):
    proc = start(str(target_path("threads_many")), "4", "1")
    address = proc.target.addr("counters")

    def counters() -> tuple[int, ...]:
        return struct.unpack("4Q", read_memory(proc.pid, address, 32))

    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: status_field(proc.pid, "State").startswith("T"), what="the group stop")
    proc.dump()
    proc.restore()
    assert {status_field(proc.pid, "State", tid)[0] for tid in tasks(proc.pid)} == {"T"}
    stopped = counters()
    time.sleep(0.1)
    assert counters() == stopped, "a thread ran while the process was stopped"
    os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: all(now > then for now, then in zip(counters(), stopped)), what="every thread after SIGCONT")


def test_threads_in_timed_waits_wake_at_their_own_deadlines(start):
    started = time.monotonic()
    proc = start(PYTHON, "-c", PYTHON_TIMED_WAITS)
    time.sleep(1.0)  # a wait started over at the restore would end after WAIT_S + 1 s
    proc.dump()
    proc.restore()
    restored = time.monotonic()
    assert restored - started < WAIT_S, "restored after the deadline: nothing to check"
    woke = {words[1]: float(words[2]) for words in wait_for(lambda: len(lines(proc.out, "woke")) == 4 and
                                                            lines(proc.out, "woke"), what="every wait to end")}
    wait_for(lambda: lines(proc.out, "done"), what="the threads to be joined")
    # Each wait keeps its deadline: it neither returns early (EINTR taken for a wake-up) nor starts over.
    assert set(woke) == {"poll", "select", "sleep", "futex"}
    assert all(WAIT_S - 0.05 <= elapsed < WAIT_S + 0.7 for elapsed in woke.values()), woke
