"""Two descriptors of one open file description (a dup, `2>&1`) are restored as one: they share the offset."""

import re
import sys

import pytest

from restore_support import Restorable, wait_for

SCRIPT = """
import os, time
first = os.open("log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
second = os.dup(first)
i = 0
while True:
    os.write(first, b"a%d\\n" % i)
    os.write(second, b"b%d\\n" % i)
    i += 1
    time.sleep(0.01)
"""


@pytest.fixture
def shell(tmp_path):
    target = Restorable([sys.executable, "-c", SCRIPT], tmp_path, ready=False)
    yield target
    target.stop()


def log_lines(shell) -> list[str]:
    """The complete lines of the log (none before bash created it)."""
    path = shell.workdir / "log"
    text = path.read_text() if path.exists() else ""
    return text[:text.rfind("\n") + 1].splitlines()


def test_restore_keeps_two_fds_on_one_open_file_sharing_their_offset(shell):
    wait_for(lambda: len(log_lines(shell)) > 6, what="bash to write")
    shell.dump()
    written = len(log_lines(shell))
    shell.restore()
    wait_for(lambda: len(log_lines(shell)) > written + 10, what="the restored bash to write on")
    seen = log_lines(shell)
    # Separate opens would each write at their own offset, over each other's lines.
    expected = [f"{tag}{i}" for i in range(len(seen) // 2 + 1) for tag in "ab"][:len(seen)]
    assert seen == expected
    assert all(re.fullmatch(r"[ab]\d+", line) for line in seen)
