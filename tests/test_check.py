"""`python -m runtime check`: the real probes on this machine, its JSON, and real failures without a capability."""

import json
import os
import subprocess
import sys
from pathlib import Path

from runtime import check

REPO = Path(__file__).resolve().parent.parent
REQUIRED = [p.name for p in check.PROBES if any(use in check.REQUIRED_BY for use in p.needed_by)]
LATER = [p.name for p in check.PROBES if p.name not in REQUIRED]


def run_check(*args: str, without_caps: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The check command, as root but with the named capabilities gone from every set (setpriv)."""
    prefix = []
    if without_caps:
        dropped = ",".join(f"-{cap}" for cap in without_caps)
        prefix = ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}"]
    return subprocess.run([*prefix, sys.executable, "-m", "runtime", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def lines_by_feature(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    return {name: next(line for line in lines if f" {name} " in line) for name in REQUIRED + LATER}


def test_check_finds_everything_dump_and_restore_need_on_this_machine():
    done = run_check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    lines = lines_by_feature(done.stdout)
    for name in REQUIRED:
        assert lines[name].startswith("ok "), lines[name]
    assert done.stdout.splitlines()[-1] == "dump and restore: everything they need is here"
    assert "[vdso]" in lines["vDSO layout and mremap"] and "avx512" in lines["xsave features"]


def test_check_says_which_part_of_the_tool_needs_each_feature():
    lines = lines_by_feature(run_check().stdout)
    assert "restore" in lines["clone3 set_tid"]
    assert "dump" in lines["PAGEMAP_SCAN"]
    assert "lazy restore (later)" in lines["userfaultfd"]
    assert "--tcp-established" in lines["TCP_REPAIR"]


def test_check_json_is_for_programs():
    done = run_check("--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] is True
    assert [f["name"] for f in report["features"]] == [p.name for p in check.PROBES]
    for feature in report["features"]:
        assert feature["required"] == (feature["name"] in REQUIRED)
        assert feature["ok"] or not feature["required"], feature


def test_check_without_checkpoint_capabilities_says_missing_and_exits_1():
    done = run_check(without_caps=("checkpoint_restore", "sys_admin"))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = lines_by_feature(done.stdout)
    assert lines["clone3 set_tid"].startswith("missing ")
    assert "needs CAP_CHECKPOINT_RESTORE" in lines["clone3 set_tid"]
    assert lines["CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"].startswith("missing ")
    assert lines["ptrace SEIZE/INTERRUPT"].startswith("ok ")  # the rest is still probed
    assert done.stdout.splitlines()[-1] == \
        "dump and restore: missing CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, clone3 set_tid"
    report = json.loads(run_check("--json", without_caps=("checkpoint_restore", "sys_admin")).stdout)
    assert report["ready"] is False


def test_check_without_net_admin_misses_tcp_repair_but_passes():
    done = run_check(without_caps=("net_admin",))
    assert done.returncode == 0, done.stdout + done.stderr
    tcp = lines_by_feature(done.stdout)["TCP_REPAIR"]
    assert tcp.startswith("missing ") and "Operation not permitted (EPERM)" in tcp and "CAP_NET_ADMIN" in tcp


def test_probes_leave_no_child_behind():
    results = check.run_probes()
    assert check.ready(results), [r for r in results if not r.ok]
    children = [Path(f"/proc/self/task/{tid}/children").read_text().split() for tid in os.listdir("/proc/self/task")]
    assert not any(children), children
