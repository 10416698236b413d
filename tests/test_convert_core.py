"""`core`: an image written as an ELF core file that gdb reads as if the process had crashed at the dump."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from dump_support import target_path
from restore_support import Restorable, lines, wait_for
from runtime.images.loader import load

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def counter(tmp_path):
    proc = Restorable([str(target_path("core_counter"))], tmp_path)
    yield proc
    proc.stop()


def core_of(proc, tmp_path) -> Path:
    for n in range(1, 4):
        os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: ["counter", str(n)] in lines(proc.out, "counter"), what=f"counter {n}")
    proc.dump(leave_running=True)
    core = tmp_path / "core"
    subprocess.run([sys.executable, "-m", "runtime", "core", "-D", str(proc.images), "-o", str(core)], cwd=REPO,
                   check=True, capture_output=True)
    return core


def test_gdb_reads_every_thread_its_backtrace_the_counter_and_rip(counter, tmp_path):
    core = core_of(counter, tmp_path)
    gdb = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info threads", "-ex", "thread apply all bt",
                          "-ex", "print counter", "-ex", "thread 1", "-ex", "info registers rip",
                          str(target_path("core_counter")), str(core)],
                         capture_output=True, text=True, timeout=120)
    out = gdb.stdout
    with load(counter.images) as checkpoint:
        process = checkpoint.root.process
    tids = [thread.tid for thread in process.threads]
    assert all(f"LWP {tid}" in out for tid in tids), out
    assert out.count("worker_loop") >= 2 and re.search(r"in main \(\)", out), out
    assert "$1 = 3" in out, out
    rip = process.threads[0].regs.rip
    assert re.search(rf"rip\s+{rip:#x}", out), (hex(rip), out)


def test_the_core_has_a_load_per_mapping_and_the_notes_gdb_needs(counter, tmp_path):
    core = core_of(counter, tmp_path)
    with load(counter.images) as checkpoint:
        process = checkpoint.root.process
    with open(core, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_CORE" and elf.header.e_machine == "EM_X86_64"
        loads = [s for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
        assert [(s.header.p_vaddr, s.header.p_memsz) for s in loads] == [(v.start, v.size) for v in process.vmas]
        notes = [n for s in elf.iter_segments() if s.header.p_type == "PT_NOTE" for n in s.iter_notes()]
        kinds = [n.n_type for n in notes]
        # pyelftools has no name for NT_X86_XSTATE (0x202): it gives the number.
        assert kinds.count("NT_PRSTATUS") == len(process.threads) == kinds.count(0x202) == 3
        for kind in ("NT_PRPSINFO", "NT_AUXV", "NT_FILE", "NT_SIGINFO", "NT_FPREGSET"):
            assert kind in kinds, kind
        psinfo = next(n for n in notes if n.n_type == "NT_PRPSINFO").n_desc
        assert psinfo.pr_pid == process.pid and psinfo.pr_fname.rstrip(b"\0") == b"core_counter"
        files = next(n for n in notes if n.n_type == "NT_FILE").n_desc
        assert str(target_path("core_counter")) in [name.decode() if isinstance(name, bytes) else name
                                                    for name in files.filename]
        # The counter's page in the core holds the value it had at the dump.
        address = int(counter.target.info["counter"], 16)
        holder = next(s for s in loads if s.header.p_vaddr <= address < s.header.p_vaddr + s.header.p_filesz)
        f.seek(holder.header.p_offset + address - holder.header.p_vaddr)
        assert int.from_bytes(f.read(8), "little") == 3


def test_a_process_not_in_the_image_is_refused_naming_what_it_holds(counter, tmp_path):
    core_of(counter, tmp_path)
    result = subprocess.run([sys.executable, "-m", "runtime", "core", "-D", str(counter.images), "-o",
                             str(tmp_path / "other"), "-p", "1"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and not (tmp_path / "other").exists()
    assert result.stderr == f"revive: {counter.images}: no live process 1 in the image (it holds [{counter.pid}])\n"
