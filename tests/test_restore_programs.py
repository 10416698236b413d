"""Real programs dumped, killed, restored and seen to continue: sleep, a python3 loop, a bash loop."""

import os
import subprocess
import sys
import time

import pytest

from restore_support import Restorable, wait_for

PYTHON_LOOP = "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n"
# Waits by counting, not with sleep: a child (a running `sleep`) would make the dump refuse it.
BASH_LOOP = "i=0; while true; do echo $i >> seq.txt; i=$((i+1)); for ((j = 0; j < 3000; j++)); do :; done; done"


@pytest.fixture
def program(tmp_path, request):
    proc = Restorable(request.param, tmp_path, ready=False)
    yield proc
    proc.stop()


def numbers(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def check_sequence_continues(proc, path) -> None:
    wait_for(lambda: len(numbers(path)) >= 5, what="the first numbers")
    proc.dump()
    dumped = len(numbers(path))
    proc.restore()
    wait_for(lambda: len(numbers(path)) >= dumped + 10, what="numbers after the restore")
    seen = numbers(path)
    assert seen == list(range(len(seen))), "the sequence has a gap or a repeat"


@pytest.mark.parametrize("program", [["sleep", "1000"]], indirect=True)
def test_restored_sleep_keeps_sleeping_as_itself(program):
    wait_for(lambda: "nanosleep" in open(f"/proc/{program.pid}/wchan").read() or
             open(f"/proc/{program.pid}/syscall").read().split()[0] in ("35", "230"), what="sleep to sleep")
    program.dump()
    program.restore()
    time.sleep(0.3)
    with open(f"/proc/{program.pid}/stat") as f:
        assert f.read().split()[2] == "S"
    assert open(f"/proc/{program.pid}/cmdline").read() == "sleep\x001000\x00"
    assert os.readlink(f"/proc/{program.pid}/exe") == "/usr/bin/sleep"
    assert open(f"/proc/{program.pid}/comm").read() == "sleep\n"


@pytest.mark.parametrize("program", [[sys.executable, "-c", PYTHON_LOOP]], indirect=True)
def test_restored_python_loop_continues_its_sequence(program):
    check_sequence_continues(program, program.out)


@pytest.mark.parametrize("program", [["bash", "-c", BASH_LOOP]], indirect=True)
def test_restored_bash_loop_continues_appending(program):
    check_sequence_continues(program, program.workdir / "seq.txt")


@pytest.mark.parametrize("program", [[sys.executable, "-c", "import os, time\nwhile not os.path.exists('quit'):"
                                      "\n    time.sleep(0.01)\nraise SystemExit(7)\n"]], indirect=True)
def test_restore_command_waits_and_exits_with_the_restored_status(program):
    time.sleep(0.3)
    program.dump()
    cli = subprocess.Popen([sys.executable, "-m", "runtime", "restore", "-D", str(program.images)],
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(f"/proc/{program.pid}"), what="the restored process")
        (program.workdir / "quit").touch()
        assert cli.wait(timeout=10) == 7, cli.stderr.read()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
