"""A python3 target that sets task controls, then counts; SIGUSR1 makes it print what it sees of itself.

argv[1] is a comma-separated list of what to set: "all" (every control but
the parent-death signal) and/or "pdeath" (SIGUSR2 on parent death, whose
handler prints "parent died" and exits).
"""

import ctypes
import os
import signal
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
PR_GET_TIMERSLACK, PR_SET_TIMERSLACK = 30, 29
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42


def prctl_int(option):
    value = ctypes.c_int()
    assert libc.prctl(option, ctypes.byref(value), 0, 0, 0) == 0
    return value.value


def report(*_):
    print("controls", f"pdeath={prctl_int(PR_GET_PDEATHSIG)}", f"subreaper={prctl_int(PR_GET_CHILD_SUBREAPER)}",
          f"slack={libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)}", f"thp={libc.prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)}",
          f"nice={os.getpriority(os.PRIO_PROCESS, 0)}", f"policy={os.sched_getscheduler(0)}",
          f"cpus={','.join(map(str, sorted(os.sched_getaffinity(0))))}",
          f"ioprio={libc.syscall(252, 1, 0)}", flush=True)


def parent_died(*_):
    print("parent died", flush=True)
    os._exit(0)


wanted = sys.argv[1].split(",")
if "all" in wanted:
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    assert libc.prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) == 0
    assert libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, 0, 7)
    os.sched_setaffinity(0, {0})
    IOPRIO_CLASS_BE, NR_IOPRIO_SET = 2, 251
    assert libc.syscall(NR_IOPRIO_SET, 1, 0, IOPRIO_CLASS_BE << 13 | 6) == 0
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("345")
    with open("/proc/self/coredump_filter", "w") as f:
        f.write("0x3b")
if "pdeath" in wanted:
    signal.signal(signal.SIGUSR2, parent_died)
    assert libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR2, 0, 0, 0) == 0
signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
count = 0
while True:
    count += 1
    print("count", count, flush=True)
    time.sleep(0.01)
