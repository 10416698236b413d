"""Shared pytest fixtures: the build tree every test relies on, and targets several test files start."""

import pathlib
import subprocess
import sys

import pytest

from dump_support import start_target, target_path
from tree_support import subreaper

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def build_tree() -> pathlib.Path:
    """Runs `scons blobs targets` once per session (under the tree's scons lock) and returns build/."""
    # The scons of the interpreter running the tests (the venv's): it need not be on PATH.
    done = subprocess.run(
        ["flock", "/tmp/revive-scons.lock", sys.executable, "-m", "SCons", "-Q", "blobs", "targets"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.exit(f"scons blobs targets failed:\n{done.stdout}{done.stderr}", returncode=1)
    return REPO / "build"


@pytest.fixture
def pages_target(tmp_path):
    """The dump_pages target (known pages in every kind of mapping), killed and reaped afterwards."""
    target = start_target([str(target_path("dump_pages")), str(tmp_path / "backing")], tmp_path)
    yield target
    target.stop()


@pytest.fixture
def state_target(tmp_path, request):
    """The infect_state target (known registers, signals, fds and patterned pages), killed and reaped afterwards.

    Its MiB of patterned pages: the test module's STATE_TARGET_MIB, else 1.
    """
    mib = getattr(request.module, "STATE_TARGET_MIB", 1)
    target = start_target([str(target_path("infect_state")), str(tmp_path / "file"), str(mib)], tmp_path)
    yield target
    target.stop()


@pytest.fixture
def reaper():
    """This test process as child subreaper for the test: the orphans of the trees it starts are its to reap."""
    with subreaper():
        yield
