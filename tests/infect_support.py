"""Test support for the ptrace/infection tests: snapshots of a stopped process and target output.

Why: "the process is exactly as it was" is checked the same way everywhere:
registers, the whole xsave area, the signal mask, /proc/PID/maps and a
digest of every writable mapping, all read while the process is seized.
Targets come from dump_support (started with their output in a file and
always killed and reaped).
"""

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.kernel import ptrace

SPECIAL = ("[vvar]", "[vvar_vclock]", "[vsyscall]")


@dataclass(frozen=True)
class Snapshot:
    regs: bytes
    xstate: bytes
    sigmask: int
    maps: str
    memory: str  # sha256 over every writable mapping's bytes


# struct rseq fields the kernel rewrites whenever the thread returns to user
# mode on another CPU (cpu_id_start, cpu_id, node_id, mm_cid): live values, not state.
RSEQ_LIVE_FIELDS = ((0, 8), (20, 8))


def rseq_live_bytes(pid: int) -> set[int]:
    live = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        conf = ptrace.get_rseq_configuration(int(tid))
        if conf.address:
            for offset, size in RSEQ_LIVE_FIELDS:
                live.update(range(conf.address + offset, conf.address + offset + size))
    return live


def memory_digest(pid: int, maps: str) -> str:
    digest = hashlib.sha256()
    live = rseq_live_bytes(pid)
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps.splitlines():
            fields = line.split()
            if fields[1][1] != "w" or fields[-1] in SPECIAL:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            mem.seek(start)
            data = bytearray(mem.read(end - start))
            for address in live:
                if start <= address < end:
                    data[address - start] = 0
            digest.update(data)
    return digest.hexdigest()


# The x87 part of the legacy area in its init state (FCW 0x37f, everything else 0, MXCSR apart),
# and where XSTATE_BV sits in the xsave header.
X87_INIT = (b"\x7f\x03" + bytes(22), bytes(128))
XSTATE_BV_OFFSET = 512


def comparable_xstate(xstate: bytes) -> bytes:
    """The xsave area with XSTATE_BV's x87 bit cleared when the x87 registers hold their init values.

    The CPU tracks whether x87 is "in use" (XINUSE) and may clear the bit
    whenever the registers are back at their init values, for instance after
    a context switch restores them with XRSTOR: the same state then reads
    back with bit 0 set or clear. The registers themselves are compared in
    full either way.
    """
    if (xstate[0:24], xstate[32:160]) != X87_INIT:
        return xstate
    area = bytearray(xstate)
    area[XSTATE_BV_OFFSET] &= ~1
    return bytes(area)


def snapshot(pid: int, tid: int | None = None) -> Snapshot:
    """The state of a seized process (registers of thread tid, the leader by default).

    Every thread must be stopped under our ptrace (rseq areas are asked per thread).
    """
    tid = tid or pid
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    xstate = comparable_xstate(ptrace.get_xstate(tid))
    return Snapshot(bytes(ptrace.get_regs(tid)), xstate, ptrace.get_sigmask(tid), maps, memory_digest(pid, maps))


def ticks(out: Path) -> list[int]:
    """The loop counts an infect_state target printed (a torn last line is ignored)."""
    lines = out.read_text().splitlines()
    return [int(line.split()[1]) for line in lines[:-1] if line.startswith("tick ")]


def wait_for_line(out: Path, prefix: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.01)
    raise AssertionError(f"no line starting with {prefix!r} in {out}: {out.read_text()[-500:]!r}")


def thread_states(pid: int) -> dict[int, str]:
    states = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            states[int(tid)] = f.read().rsplit(")", 1)[1].split()[0]
    return states


def assert_keeps_ticking(out: Path, after: float = 0.15) -> None:
    """The infect_state target is alive, its count grows, and it never saw a register change."""
    before = ticks(out)
    time.sleep(after)
    later = ticks(out)
    assert "CORRUPT" not in out.read_text()
    assert len(later) > len(before) and later[-1] > (before[-1] if before else -1)
    assert later == sorted(later)
