"""Dump and restore wall time of a process holding many kernel objects: 1,000 epoll registrations, a 100 MiB
memfd, 100 POSIX timers.

Each target is the system python3 holding the objects (eventfds in one
epoll; a memfd filled with random bytes, which no page of the image can
share or skip; timers made with timer_create through ctypes, armed 1000 s
ahead), dumped with the real command line into /dev/shm (which kills it),
restored detached, checked (the same objects are there, read from /proc)
and killed (this process is a child subreaper: the restored process,
detached, becomes its child to reap). The floor is the same python3 holding nothing, measured in the
same run: what each kind of object costs is its time minus the floor's.
Each time is the median of --repeat runs. Prints figures; asserts nothing
but that every restored process holds its objects again.

usage: python benchmarks/kernel_objects.py [--repeat 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from measure import SHM, kill_and_reap, runtime, wait_for_line
from runtime.kernel.clone import become_subreaper

PYTHON = "/usr/bin/python3"  # the system interpreter: a target, not the venv running the runtime

SETUP = {
    "python3 holding nothing": "",
    "1,000 epoll registrations": """
import os, select
ep = select.epoll()
fds = [os.eventfd(0) for _ in range(1000)]
for fd in fds:
    ep.register(fd, select.EPOLLIN)
""",
    "100 MiB memfd": """
import os
fd = os.memfd_create("bench")
for _ in range(100):
    os.write(fd, os.urandom(1 << 20))
""",
    "100 POSIX timers": """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
event = (ctypes.c_int * 16)()
event[3] = 1  # sigev_notify = SIGEV_NONE
ids = []
for _ in range(100):
    timer = ctypes.c_void_p()
    assert libc.timer_create(1, event, ctypes.byref(timer)) == 0
    spec = (ctypes.c_long * 4)(0, 0, 1000, 0)
    assert libc.timer_settime(timer, 0, spec, None) == 0
    ids.append(timer)
""",
}
HOLD = "\nimport os, time\nprint('ready', flush=True)\ntime.sleep(1000)\n"


def held(pid: int) -> tuple[int, int, int]:
    """(epoll registrations, memfd bytes, POSIX timers) the process holds, from /proc."""
    registered, memfd = 0, 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if link == "anon_inode:[eventpoll]":
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                registered += sum(line.startswith("tfd:") for line in f)
        elif link.startswith("/memfd:bench"):
            memfd += os.stat(f"/proc/{pid}/fd/{fd}").st_size
    with open(f"/proc/{pid}/timers") as f:
        timers = sum(line.startswith("ID:") for line in f)
    return registered, memfd, timers


def bench_once(setup: str) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="revive-bench-", dir=SHM))
    try:
        out = work / "out.txt"
        with open(out, "w") as stdout:
            target = subprocess.Popen([PYTHON, "-c", setup + HOLD], stdin=subprocess.DEVNULL, stdout=stdout,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_line(out, "ready")
        expected = held(target.pid)
        dump_s, _ = runtime("dump", "-t", str(target.pid), "-D", str(work / "images"))
        target.wait()
        restore_s, _ = runtime("restore", "-D", str(work / "images"), "-d")
        if held(target.pid) != expected:
            raise SystemExit(f"the restored process holds {held(target.pid)}, the dumped one held {expected}")
        kill_and_reap(target.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dump_s, restore_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    become_subreaper()  # a detached restored process is reparented to us, to reap
    results = {}
    for name, setup in SETUP.items():
        runs = [bench_once(setup) for _ in range(options.repeat)]
        results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    floor_dump, floor_restore = results["python3 holding nothing"]
    print(f"{'target':28} {'dump s':>8} {'restore s':>10} {'dump - floor':>13} {'restore - floor':>16}")
    for name, (dump_s, restore_s) in results.items():
        print(f"{name:28} {dump_s:8.3f} {restore_s:10.3f} {dump_s - floor_dump:13.3f} "
              f"{restore_s - floor_restore:16.3f}")
    print(f"medians of {options.repeat}; images on /dev/shm; the floor is the first row, measured in this run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
