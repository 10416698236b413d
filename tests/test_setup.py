"""scripts/setup.sh on a fresh clone with Debian's own /usr/bin/python3 first on PATH.

Debian 12's python3 is externally managed (PEP 668): `pip install` into it is
refused, which is how the README's commands used to fail on a fresh machine.
The setup must make a virtual environment from that python3 and install the
project there; a second run must only check. The clone is of HEAD, so this
tests what is committed, the way a newcomer gets it.
"""

import os
import pathlib
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = "/usr/bin/python3"
# Only system directories: no pyenv shims, no venv, so `python3` is Debian's.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# A second run checks the apt packages, the venv's stamp and a no-op scons.
SECOND_RUN_SECONDS = 5

pytestmark = pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON),
                                reason=f"{DEBIAN_PYTHON} is absent: this machine has no Debian python3 to set up with")


def debian_environment() -> dict[str, str]:
    """The caller's environment with PATH reduced to the system's and nothing pointing at another python."""
    hidden = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION"}
    return {**{k: v for k, v in os.environ.items() if k not in hidden}, "PATH": SYSTEM_PATH}


def run_setup(clone: pathlib.Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(["scripts/setup.sh"], cwd=clone, env=debian_environment(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    return done, time.monotonic() - start


@pytest.fixture
def clone(tmp_path) -> pathlib.Path:
    """A clone of this repository's HEAD, as a newcomer gets it."""
    dest = tmp_path / "revive"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, capture_output=True, timeout=120)
    return dest


def test_setup_with_debian_python(clone):
    assert shutil.which("python3", path=SYSTEM_PATH) == DEBIAN_PYTHON
    stdlib = subprocess.run([DEBIAN_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.exists(os.path.join(stdlib, "EXTERNALLY-MANAGED")), f"{DEBIAN_PYTHON} is not externally managed"

    first, first_seconds = run_setup(clone)
    assert first.returncode == 0, f"setup.sh failed after {first_seconds:.1f} s:\n{first.stdout}{first.stderr}"

    venv_python = clone / ".venv" / "bin" / "python"
    imported = subprocess.run(
        [venv_python, "-c", "import sys, runtime, blobgen; print(sys.base_prefix); print(runtime.__file__)"],
        cwd="/", capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    base_prefix, runtime_file = imported.stdout.split()
    assert base_prefix == "/usr"  # the venv was made from Debian's python3
    assert pathlib.Path(runtime_file).is_relative_to(clone)  # installed editable, from the clone
    assert (clone / "build" / "pie" / "parasite.bin").exists()
    assert (clone / "build" / "targets" / "dump_pages").exists()

    usage = subprocess.run([clone / ".venv" / "bin" / "revive", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0, usage.stderr
    assert "dump" in usage.stdout and "restore" in usage.stdout

    second, second_seconds = run_setup(clone)
    assert second.returncode == 0, f"second setup.sh failed:\n{second.stdout}{second.stderr}"
    assert second_seconds < SECOND_RUN_SECONDS, f"a second setup.sh took {second_seconds:.1f} s: it should only check"
    print(f"setup.sh on a fresh clone: {first_seconds:.1f} s, again: {second_seconds:.2f} s")
