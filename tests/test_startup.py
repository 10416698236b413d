"""What a command imports: the heavy libraries (pyroute2, rich, pyelftools, ...) only when its work needs them.

Why a test: a dump or a restore of a small process takes tens of
milliseconds, and one top-level import of a library it does not use costs
as much or more (pyroute2 about a quarter of a second, python-ptrace's
bindings ran `ldconfig -p`), issue 18. Each check runs a fresh interpreter
and reads its sys.modules after the real command has run.
"""

import signal
import subprocess
import sys
from pathlib import Path

from restore_support import wait_for
from runtime import cli
from runtime.mm.vdso import VdsoMode
from tree_support import reap

REPO = Path(__file__).resolve().parent.parent
# What no dump or restore of a process without sockets, inotify watches or a proxied vDSO needs.
HEAVY = ("pyroute2", "rich", "elftools", "ptrace", "lief", "jinja2", "capstone", "importlib.metadata",
         "subprocess", "tempfile")
# The command line's main with ARGS, writing the names in sys.modules to OUT when it ends (argv: OUT ARGS...);
# not `python -m runtime`, whose end (cli.run) is an os._exit that would skip the writing.
REPORTING = ("import sys\n"
             "out = sys.argv.pop(1)\n"
             "from runtime.cli import main\n"
             "try:\n"
             "    status = main()\n"
             "finally:\n"
             "    open(out, 'w').write('\\n'.join(sorted(sys.modules)))\n"
             "sys.exit(status)\n")


def command_modules(out: Path, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", REPORTING, str(out), *args], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


def test_importing_the_command_line_loads_no_command_and_no_heavy_library():
    done = subprocess.run([sys.executable, "-c", "import sys, runtime.cli; print(*sorted(sys.modules))"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    modules = set(done.stdout.split())
    assert "runtime.cli" in modules
    assert heavy_in(modules) == []
    assert not modules & {"runtime.dump", "runtime.restore", "runtime.check", "runtime.show", "runtime.files.inet"}


def test_the_command_lines_vdso_modes_are_the_enums_with_auto_first():
    assert cli.VDSO_MODES == tuple(mode.value for mode in VdsoMode) and VdsoMode(cli.VDSO_MODES[0]) is VdsoMode.AUTO


def test_dump_and_restore_of_a_sleep_load_no_heavy_library(tmp_path, reaper):
    target = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: open(f"/proc/{target.pid}/stat").read().split()[2] == "S", what="sleep to sleep")
        dumped = command_modules(tmp_path / "dump-modules", "dump", "-t", str(target.pid), "-D", str(tmp_path / "img"))
        assert target.wait(timeout=10) == -signal.SIGKILL
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert "runtime.dump" in dumped and heavy_in(dumped) == []

    try:
        restored = command_modules(tmp_path / "restore-modules", "restore", "-D", str(tmp_path / "img"), "-d")
        # The restored sleep, an orphan of the finished command, is this subreaper's: it runs on, asleep.
        assert Path(f"/proc/{target.pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
        wait_for(lambda: open(f"/proc/{target.pid}/stat").read().split()[2] == "S", what="restored sleep to sleep")
    finally:
        reap([target.pid])
    assert "runtime.restore" in restored and heavy_in(restored) == []
