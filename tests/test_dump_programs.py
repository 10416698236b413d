"""Dumps of real programs (sleep, a python3 loop, a bash loop) with --leave-running."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from runtime.dump import DumpOptions, dump
from runtime.images.loader import load
from runtime.images.model import FdKind, VmaKind
from runtime.kernel.procfs.status import read_status

# name -> (argv, the file it keeps writing to, or None)
PROGRAMS = {
    "sleep": (["sleep", "1000"], None),
    "python3": ([sys.executable, "-c", "import itertools, sys, time\n"
                 "for i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.02)"], "out.txt"),
    # Waits by counting, not with sleep: a child (a running `sleep`) would make the dump refuse it.
    "bash": (["bash", "-c", "i=0; while :; do echo $i >> seq.txt; i=$((i+1)); "
                            "for ((j = 0; j < 3000; j++)); do :; done; done"], "seq.txt"),
}


@pytest.fixture(params=sorted(PROGRAMS))
def program(request, tmp_path):
    argv, output = PROGRAMS[request.param]
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    time.sleep(0.3)
    yield proc, output and tmp_path / output
    proc.kill()
    proc.wait()


def test_dump_of_a_real_program_loads_and_it_runs_on(program, tmp_path):
    proc, output = program
    process = dump(proc.pid, tmp_path / "img", DumpOptions(leave_running=True))
    loaded = load(tmp_path / "img").root.process
    assert loaded == process
    assert loaded.mm.exe == os.path.realpath(shutil.which(proc.args[0]))
    assert loaded.files[0].kind is FdKind.CHR and any(v.kind is VmaKind.STACK for v in loaded.vmas)
    assert loaded.page_runs and loaded.threads[0].rseq is not None
    assert proc.poll() is None and read_status(proc.pid).tracer_pid == 0
    if output is not None:
        size = output.stat().st_size
        time.sleep(0.2)
        assert output.stat().st_size > size
