"""`python -m runtime parasite`: results on stdout, each refusal as one line naming the PID, exit status."""

import json
import os
import subprocess
import sys
import time

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "runtime", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def refused(result, message):
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"revive: {message}\n"


def test_misc_as_json(state_target):
    result = run("parasite", "-t", str(state_target.pid), "--json", "misc")
    assert result.returncode == 0, result.stderr
    misc = json.loads(result.stdout)
    assert misc["pid"] == state_target.pid and misc["umask"] == 0o027 and misc["rlimits"][7]["cur"] == 200


def test_each_command_prints_its_result(state_target):
    pid = str(state_target.pid)
    assert run("parasite", "-t", pid, "noop").stdout == "ok\n"
    assert run("parasite", "-t", pid, "echo", "0x2a").stdout == "value: 42\nechoed: 42\n"
    thread = json.loads(run("parasite", "-t", pid, "--json", "thread").stdout)
    assert thread["altstack"]["sp"] == state_target.addr("altstack")
    sigactions = json.loads(run("parasite", "-t", pid, "--json", "sigactions").stdout)
    assert sigactions["2"]["handler"] == 1 and len(sigactions) == 64


def test_no_such_process():
    refused(run("parasite", "-t", "4194304", "noop"), "pid 4194304: no such process (reading /proc/4194304/status)")


def test_kernel_thread():
    refused(run("parasite", "-t", "2", "noop"), "pid 2: is a kernel thread")


def test_zombie():
    child = subprocess.Popen(["true"])
    try:
        while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        refused(run("parasite", "-t", str(child.pid), "noop"),
                f"pid {child.pid}: is a zombie (exited, not yet reaped by its parent)")
    finally:
        child.wait()


def test_own_process():
    # The shell execs the runtime, so $$ is the runtime's own PID.
    result = subprocess.run(["sh", "-c", f'exec "{sys.executable}" -m runtime parasite -t $$ noop'], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("revive: pid ") and result.stderr.endswith(": is the runtime's own process\n")


def test_already_traced(state_target):
    tracer = subprocess.Popen([sys.executable, "-c", "import sys; from runtime.kernel import ptrace; "
                               f"ptrace.seize({state_target.pid}); print('ok', flush=True); sys.stdin.read()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout.readline().strip() == "ok"
        refused(run("parasite", "-t", str(state_target.pid), "noop"),
                f"pid {state_target.pid}: already traced by pid {tracer.pid}")
    finally:
        tracer.kill()
        tracer.wait()


def test_not_permitted():
    other = subprocess.Popen(["sleep", "60"], user=65534, group=65534)
    try:
        refused(run("parasite", "-t", str(other.pid), "noop", prefix=("setpriv", "--bounding-set=-sys_ptrace")),
                f"pid {other.pid}: ptrace SEIZE of thread {other.pid} not permitted")
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("args", [("parasite",), ("parasite", "-t", "1", "bogus"), ("parasite", "-t", "x", "noop"),
                                  ("parasite", "-t", "1", "echo"), ("nosuchcommand",)])
def test_bad_usage_exits_2(args):
    result = run(*args)
    assert result.returncode == 2 and result.stdout == "" and "usage:" in result.stderr
