"""Credentials restored by the restorer's last step: another user's ids and groups, capability sets.

Why these two: a non-root target is the case the restorer's privileged
steps (PR_SET_MM_MAP, mapping the files) must come before, and a reduced
bounding set needs the drop to happen while the restoring process still
holds CAP_SETPCAP.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from restore_support import Restorable, wait_for

NOBODY = 65534
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def sleeping(pid: int) -> bool:
    return status(pid)["State"].startswith("S")


@pytest.fixture
def program(request):
    """The target, in a directory reachable from / whose output file nobody owns.

    Restore reopens the process's files and cwd with the process's own
    credentials (docs/security.md): pytest's tmp_path (under a 0700
    directory) and a root-owned output file would be refused for nobody.
    """
    workdir = Path(tempfile.mkdtemp(prefix="revive-creds-"))
    os.chmod(workdir, 0o755)
    (workdir / "out.txt").touch()
    os.chown(workdir / "out.txt", NOBODY, NOBODY)
    proc = Restorable(request.param, workdir, ready=False)
    yield proc
    proc.stop()
    shutil.rmtree(workdir)


def dump_and_restore(program) -> tuple[dict[str, str], dict[str, str]]:
    wait_for(lambda: status(program.pid)["Name"] == "sleep" and sleeping(program.pid), what="sleep to sleep")
    before = status(program.pid)
    program.dump()
    program.restore()
    wait_for(lambda: sleeping(program.pid), what="the restored sleep to sleep")
    return before, status(program.pid)


@pytest.mark.parametrize("program", [["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                      "sleep", "1000"]], indirect=True)
def test_nobody_restores_as_nobody_with_its_capabilities(program):
    before, after = dump_and_restore(program)
    assert before["Uid"].split() == [str(NOBODY)] * 4
    assert after["Uid"].split() == [str(NOBODY)] * 4
    assert after["Gid"].split() == [str(NOBODY)] * 4
    assert after["Groups"].split() == []
    assert {k: after[k] for k in CAP_FIELDS} == {k: before[k] for k in CAP_FIELDS}
    assert int(after["CapPrm"], 16) == 0
    # /proc/PID belongs to the task's euid only while it is dumpable: the uid change reset that.
    assert os.stat(f"/proc/{program.pid}").st_uid == NOBODY


@pytest.mark.parametrize("program", [["setpriv", "--bounding-set=-net_raw", "sleep", "1000"]], indirect=True)
def test_root_with_reduced_bounding_set_keeps_it(program):
    before, after = dump_and_restore(program)
    assert not int(before["CapBnd"], 16) >> 13 & 1, "setpriv did not drop CAP_NET_RAW"
    assert after["Uid"].split() == ["0"] * 4
    assert {k: after[k] for k in CAP_FIELDS} == {k: before[k] for k in CAP_FIELDS}
