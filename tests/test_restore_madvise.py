"""madvise advice a mapping carries (smaps VmFlags dc, wf, dd, hg, nh, mg, sr, rr) is dumped, restored and still works.

The target (tests/targets/madvise_flags.c) maps one region per advice; each
test reads the flags from the restored process's own /proc/PID/smaps, not
from the image, so a flag the restorer forgot fails here.
"""

import json
import os
from pathlib import Path

import pytest

from dump_support import target_path
from restore_support import Restorable, lines, run_cli, wait_for
from runtime.errors import ImageError
from runtime.images import loader
from runtime.images.model import KERNEL_MAPPING_KINDS, PAGE_SIZE, VmaAdvice, VmaKind
from test_restore_cli import assert_refused, refit_checksum

# Region name in the target -> the VmFlags codes its advice sets.
EXPECTED_FLAGS = {
    "dontfork": {"dc"},
    "wipeonfork": {"wf"},
    "dontdump": {"dd"},
    "hugepage": {"hg"},
    "nohugepage": {"nh"},
    "mergeable": {"mg"},
    "sequential": {"sr"},
    "random": {"rr"},
    "dontfork_dontdump": {"dc", "dd"},
    "file_dontdump": {"dd"},
}
# The VmFlags code of each advice (fs/proc/task_mmu.c).
ADVICE_OF_FLAG = {"dc": VmaAdvice.DONTFORK, "wf": VmaAdvice.WIPEONFORK, "dd": VmaAdvice.DONTDUMP,
                  "hg": VmaAdvice.HUGEPAGE, "nh": VmaAdvice.NOHUGEPAGE, "mg": VmaAdvice.MERGEABLE,
                  "sr": VmaAdvice.SEQUENTIAL, "rr": VmaAdvice.RANDOM}


@pytest.fixture
def madvised(tmp_path):
    proc = Restorable([str(target_path("madvise_flags"))], tmp_path)
    yield proc
    proc.stop()


def vmflags_of(pid: int, start: int, end: int) -> set[str]:
    """The VmFlags of the mapping start-end, read straight from /proc/PID/smaps (one VMA, not split)."""
    header = f"{start:x}-{end:x} "
    found = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line.startswith(header):
            found = True
        elif found and line.startswith("VmFlags:"):
            return set(line.split()[1:])
    raise AssertionError(f"no mapping {start:#x}-{end:#x} in /proc/{pid}/smaps")


def advice_flags(proc: Restorable) -> dict[str, set[str]]:
    size = int(proc.target.info["pages"]) * PAGE_SIZE
    return {name: vmflags_of(proc.pid, proc.target.addr(name), proc.target.addr(name) + size) & ADVICE_OF_FLAG.keys()
            for name in EXPECTED_FLAGS}


def run_command(proc: Restorable, command: str) -> list[str]:
    seen = len(lines(proc.out, command))
    (proc.workdir / command).touch()
    return wait_for(lambda: lines(proc.out, command)[seen:], what=f"the {command} reply")[0]


def test_restore_sets_each_madvise_flag_again_and_keeps_the_contents(madvised):
    assert advice_flags(madvised) == EXPECTED_FLAGS, "the target did not set up its advice"
    madvised.dump()
    madvised.restore()
    assert advice_flags(madvised) == EXPECTED_FLAGS
    assert run_command(madvised, "verify") == ["verify", "ok"]


def test_image_records_the_advice_and_not_the_kernels_own_flags(madvised):
    madvised.dump()
    vmas = loader.load(str(madvised.images)).processes[0].process.vmas
    by_start = {vma.start: vma for vma in vmas}
    for name, flags in EXPECTED_FLAGS.items():
        assert set(by_start[madvised.target.addr(name)].advice) == {ADVICE_OF_FLAG[flag] for flag in flags}
    # [vvar] always carries dd, set by the kernel, which makes it again on restore.
    assert all(not vma.advice for vma in vmas if vma.kind in KERNEL_MAPPING_KINDS)
    shown = run_cli("show", str(madvised.images))
    assert shown.returncode == 0, shown.stderr
    assert "dontfork,dontdump" in shown.stdout and "wipeonfork" in shown.stdout


def test_restored_dontfork_and_wipeonfork_act_on_a_fork(madvised):
    madvised.dump()
    madvised.restore()
    # The child finds the WIPEONFORK region zeroed and dies touching the DONTFORK one.
    assert run_command(madvised, "fork") == ["fork", "wiped=1", "child=signal_11"]
    assert run_command(madvised, "verify") == ["verify", "ok"], "the parent's own regions are untouched"


def edit_vma(images: Path, pid: int, start: int, **changes) -> tuple[str, int]:
    """Change the dumped VMA at start; returns the process file's name and the VMA's index."""
    name = f"process-{pid}.json"
    process = json.loads((images / name).read_text())
    index = next(i for i, vma in enumerate(process["vmas"]) if vma["start"] == start)
    process["vmas"][index].update(changes)
    (images / name).write_text(json.dumps(process))
    refit_checksum(images, name)
    return name, index


def test_restore_names_the_mapping_and_the_advice_the_kernel_refuses(madvised):
    madvised.dump()
    start = madvised.target.addr("file_dontdump")
    # WIPEONFORK is for private anonymous memory only: the kernel refuses it on a file mapping.
    edit_vma(madvised.images, madvised.pid, start, advice=["wipeonfork", "dontdump"])
    madvised.restored = True  # should the restore wrongly succeed, stop() kills what runs under the PID
    assert_refused(madvised.pid, madvised.images, "advise_vmas", "MADV_WIPEONFORK", f"{start:#x}")


@pytest.mark.parametrize("advice, reason", [
    (["dontfork", "bogus"], "'bogus' is not a VmaAdvice"),
    (["dontdump", "dontfork"], "each advice once, in the order"),
    (["dontfork", "dontfork"], "each advice once, in the order"),
])
def test_image_with_unknown_or_disordered_advice_is_refused(madvised, advice, reason):
    madvised.dump()
    name, index = edit_vma(madvised.images, madvised.pid, madvised.target.addr("dontfork"), advice=advice)
    with pytest.raises(ImageError, match=rf"{name}: vmas\[{index}\]\.advice.*{reason}"):
        loader.load(str(madvised.images))


def test_image_with_advice_on_the_kernels_vvar_is_refused(madvised):
    madvised.dump()
    process = loader.load(str(madvised.images)).processes[0].process
    vvar = next(vma for vma in process.vmas if vma.kind is VmaKind.VVAR)
    name, index = edit_vma(madvised.images, madvised.pid, vvar.start, advice=["dontdump"])
    with pytest.raises(ImageError, match=rf"{name}: vmas\[{index}\]\.advice.*the kernel's"):
        loader.load(str(madvised.images))
    assert not os.path.exists(f"/proc/{madvised.pid}")
