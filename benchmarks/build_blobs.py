"""Figures for the toolchain: clean `scons blobs` time, no-op rebuild time, blob sizes.

Runs in a temporary copy of the sources so the working tree's build/ is not
touched; prints one line per figure. Not a test: nothing is asserted.
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from blobgen_support import copy_sources  # noqa: E402


def timed_scons(tree: pathlib.Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "SCons", "-Q", *args, "blobs"], cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="revive-bench-") as tmp:
        tree = copy_sources(pathlib.Path(tmp))
        print(f"clean scons blobs (-j1): {timed_scons(tree):.2f} s")
        print(f"no-op scons blobs:       {timed_scons(tree):.2f} s")
        for name in ("parasite", "restorer"):
            manifest = json.loads((tree / "build" / "pie" / f"{name}.json").read_text())
            print(
                f"{name} blob: image {manifest['size']} B, bss {manifest['bss_size']} B, "
                f"memory {manifest['memory_size']} B, {len(manifest['relocations'])} load-time relocations"
            )


if __name__ == "__main__":
    main()
