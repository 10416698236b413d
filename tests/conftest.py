"""Shared pytest fixtures: the build tree every test relies on."""

import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def build_tree() -> pathlib.Path:
    """Runs `scons blobs targets` once per session (under the tree's scons lock) and returns build/."""
    done = subprocess.run(
        ["flock", "/tmp/revive-scons.lock", "scons", "-Q", "blobs", "targets"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.exit(f"scons blobs targets failed:\n{done.stdout}{done.stderr}", returncode=1)
    return REPO / "build"
