"""Writing and loading image directories of a real process, and refusing every spoiled one."""

import json
import os
import shutil
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from images_sample import image_of_a_sleep, replace
from runtime.errors import ImageError
from runtime.images import codec, names as layout
from runtime.images.cpu import current_xsave_features
from runtime.images.loader import load
from runtime.images.model import (TASK_SIZE, FdKind, FdSlot, FileEntry, FileNode, Inventory, Process, Tree,
                                  TreeProcess, Vma, VmaKind)
from runtime.images.writer import ImageWriter
from runtime.images import digest


@pytest.fixture(scope="module")
def image_of_sleep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pristine") / "img"
    return directory, image_of_a_sleep(directory)


@pytest.fixture
def image(image_of_sleep, tmp_path):
    """A fresh copy of the pristine image for a test to spoil, and its snapshot."""
    directory = tmp_path / "img"
    shutil.copytree(image_of_sleep[0], directory)
    return directory, image_of_sleep[1]


def refused(directory, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        load(directory, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def rewrite_process(directory, change):
    """Replace process-PID.json by change(process) with a matching checksum (a hostile, not a corrupt, image)."""
    inventory = codec.loads(Inventory, (directory / layout.INVENTORY).read_bytes(), layout.INVENTORY)
    name = layout.process_file(inventory.root_pid)
    process = codec.loads(Process, (directory / name).read_bytes(), name)
    data = codec.dumps(change(process))
    (directory / name).write_bytes(data)
    write_inventory(directory, replace(inventory, files={**inventory.files, name: digest.of_bytes(data)}))


def write_inventory(directory, inventory):
    (directory / layout.INVENTORY).write_bytes(codec.dumps(inventory))


def rehash(directory, name):
    inventory = codec.loads(Inventory, (directory / layout.INVENTORY).read_bytes(), layout.INVENTORY)
    write_inventory(directory, replace(inventory, files={**inventory.files,
                                                         name: digest.of_bytes((directory / name).read_bytes())}))


def test_image_of_a_live_process_loads_back_equal(image):
    directory, snap = image
    checkpoint = load(directory)
    pid = snap.process.pid
    assert checkpoint.root.process == snap.process
    assert checkpoint.inventory.xsave_features == current_xsave_features()
    assert checkpoint.inventory.xstate_size == len(snap.xstate)
    assert checkpoint.inventory.kernel_release == os.uname().release
    assert set(checkpoint.inventory.files) == {f"process-{pid}.json", f"pages-{pid}.img",
                                               f"xstate-{pid}.img", f"vdso-{pid}.img", "tree.json"}
    assert checkpoint.root.xstate_paths[pid].read_bytes() == snap.xstate
    assert checkpoint.root.vdso_path.read_bytes() == snap.vdso_image
    assert checkpoint.root.pages_path.stat().st_size == sum(r.size for r in snap.process.page_runs)


def test_pages_file_holds_the_runs_back_to_back_in_vaddr_order(image_of_sleep):
    """Code pages read back from the pages file at each run's offset equal the mapped file's bytes there."""
    directory, snap = image_of_sleep
    process = snap.process
    compared = 0
    with (directory / layout.pages_file(process.pid)).open("rb") as pages:
        for run in process.page_runs:
            vma = next(v for v in process.vmas if v.start <= run.vaddr < v.end)
            if vma.kind is not VmaKind.FILE or vma.prot != 5:  # r-x text: never written
                continue
            pages.seek(run.offset)
            with open(vma.path, "rb") as backing:
                backing.seek(vma.offset + run.vaddr - vma.start)
                assert pages.read(run.size) == backing.read(run.size), hex(run.vaddr)
            compared += 1
    assert compared >= 2  # sleep's own text and libc's
    assert [r.vaddr for r in process.page_runs] == sorted(r.vaddr for r in process.page_runs)


def test_image_files_are_private_and_directory_is_0700(image_of_sleep):
    directory = image_of_sleep[0]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_dump_that_fails_before_finish_leaves_no_inventory(image):
    directory, snap = image
    writer = ImageWriter(directory)  # an earlier dump's inventory goes first
    assert not (directory / layout.INVENTORY).exists()
    writer.write_process(snap.process)
    message = refused(directory)
    assert message.startswith("inventory.json: missing from")


def test_finish_refuses_pages_that_do_not_match_the_runs(image, tmp_path):
    _, snap = image
    writer = ImageWriter(tmp_path / "short")
    writer.pages_file(snap.process.pid).write(b"\0" * 4096)
    writer.write_xstate(snap.process.pid, snap.xstate)
    writer.write_vdso(snap.process.pid, snap.vdso_image)
    writer.write_process(snap.process)
    with pytest.raises(ImageError, match=r"process-\d+\.json: page_runs\[\d+\]\.offset: run ends at byte"):
        writer.finish(Tree((TreeProcess.of(snap.process),)))
    assert not (tmp_path / "short" / layout.INVENTORY).exists()


def test_a_different_cpu_xstate_feature_set_is_refused(image):
    directory, _ = image
    inventory = load(directory).inventory
    write_inventory(directory, replace(inventory, xsave_features=inventory.xsave_features | 1 << 17 | 1 << 18))
    message = refused(directory)
    assert message.startswith("inventory.json: xsave_features: image has ")
    assert "amx" in message
    assert load(directory, check_cpu=False).inventory.xsave_features & 1 << 17


def test_a_wrong_format_version_is_refused_before_anything_else(image):
    directory, _ = image
    data = json.loads((directory / layout.INVENTORY).read_text())
    data["format_version"] = layout.FORMAT_VERSION + 1
    data["new_field_of_the_next_version"] = 1
    (directory / layout.INVENTORY).write_text(json.dumps(data))
    assert refused(directory) == (f"inventory.json: format_version: unsupported version {layout.FORMAT_VERSION + 1} "
                                  f"(this tool reads {layout.FORMAT_VERSION})")


def test_a_missing_directory_and_a_missing_file_are_named(image, tmp_path):
    directory, snap = image
    assert refused(tmp_path / "nothing-here").endswith("image directory: No such file or directory")
    (directory / layout.xstate_file(snap.process.pid)).unlink()
    assert refused(directory) == f"xstate-{snap.process.pid}.img: missing from {directory}"


def test_a_truncated_pages_file_fails_its_checksum(image):
    directory, snap = image
    name = layout.pages_file(snap.process.pid)
    os.truncate(directory / name, (directory / name).stat().st_size - 4096)
    assert refused(directory).startswith(f"{name}: digest ")


def test_a_page_map_beyond_the_pages_file_is_refused(image):
    directory, snap = image
    last = snap.process.page_runs[-1]
    rewrite_process(directory, lambda p: replace(p, page_runs=p.page_runs[:-1] + (replace(last, nr_pages=last.nr_pages + 1),)))
    message = refused(directory)
    assert f"page_runs[{len(snap.process.page_runs) - 1}]" in message
    assert "beyond" in message or "not inside one VMA" in message


def test_a_vma_in_the_kernel_half_is_refused(image):
    directory, snap = image
    kernel = Vma(0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, 5, False, VmaKind.ANON)
    rewrite_process(directory, lambda p: replace(p, vmas=p.vmas + (kernel,)))
    index = len(snap.process.vmas)
    assert refused(directory).startswith(f"process-{snap.process.pid}.json: vmas[{index}].end: "
                                         "0xffffffffff601000 is beyond the user address space")


@pytest.mark.parametrize("change, field", [
    (lambda p: replace(p, vmas=(replace(p.vmas[0], start=p.vmas[0].start + 1),) + p.vmas[1:]), "vmas[0].start"),
    (lambda p: replace(p, vmas=(p.vmas[1], p.vmas[0]) + p.vmas[2:]), "vmas[1].start"),
    (lambda p: replace(p, vmas=(replace(p.vmas[0], end=p.vmas[0].start),) + p.vmas[1:]), "vmas[0].end"),
    (lambda p: replace(p, page_runs=(p.page_runs[1], p.page_runs[0]) + p.page_runs[2:]), "page_runs[0].offset"),
    (lambda p: replace(p, page_runs=(replace(p.page_runs[0], vaddr=p.page_runs[0].vaddr + 8),) + p.page_runs[1:]),
     "page_runs[0].vaddr"),
    (lambda p: replace(p, sigactions=p.sigactions[:63]), "sigactions"),
    (lambda p: replace(p, rlimits=p.rlimits + p.rlimits[:1]), "rlimits"),
    (lambda p: replace(p, itimers=()), "itimers"),
    (lambda p: replace(p, threads=()), "threads"),
    (lambda p: replace(p, threads=(replace(p.threads[0], tid=p.pid + 1),)), "threads[0].tid"),
    (lambda p: replace(p, threads=(replace(p.threads[0], regs=replace(p.threads[0].regs, rip=TASK_SIZE)),)),
     "threads[0].regs.rip"),
    (lambda p: replace(p, threads=(replace(p.threads[0], regs=replace(p.threads[0].regs, rsp=2**64 - 8)),)),
     "threads[0].regs.rsp"),
    (lambda p: replace(p, vdso=replace(p.vdso, vdso_start=p.vdso.vdso_start + 4096)), "vdso.vdso_start"),
    (lambda p: replace(p, vdso=replace(p.vdso, sha256="0" * 64)), "vdso.sha256"),
    (lambda p: replace(p, mm=replace(p.mm, auxv=p.mm.auxv[:-2])), "mm.auxv"),
])
def test_an_inconsistent_process_record_names_its_field(image, change, field):
    directory, snap = image
    rewrite_process(directory, change)
    assert refused(directory).startswith(f"process-{snap.process.pid}.json: {field}: ")


def test_duplicate_and_negative_fds_are_refused(image):
    directory, snap = image
    null = FileEntry(1, FdKind.CHR, os.O_RDWR, node=FileNode("/dev/null", stat.S_IFCHR | 0o666))
    rewrite_process(directory, lambda p: replace(p, fds=(FdSlot(3, 1), FdSlot(3, 1)), files=(null,)))
    assert refused(directory).startswith(f"process-{snap.process.pid}.json: fds[1].fd: descriptor 3 appears twice")
    text = (directory / layout.process_file(snap.process.pid)).read_text()
    data = json.loads(text)
    data["fds"][1]["fd"] = -1
    (directory / layout.process_file(snap.process.pid)).write_text(json.dumps(data))
    rehash(directory, layout.process_file(snap.process.pid))
    assert refused(directory).startswith(f"process-{snap.process.pid}.json: fds[1].fd: -1 is outside")


def test_xstate_of_another_size_than_the_inventory_says_is_refused(image):
    directory, snap = image
    name = layout.xstate_file(snap.process.pid)
    (directory / name).write_bytes(snap.xstate + bytes(64))
    rehash(directory, name)
    assert refused(directory) == (f"{name}: {len(snap.xstate) + 64} bytes, but inventory.json xstate_size "
                                  f"is {len(snap.xstate)}")


def test_an_inventory_cannot_name_files_outside_the_format(image):
    directory, _ = image
    inventory = load(directory).inventory
    write_inventory(directory, replace(inventory, files={**inventory.files, "../../etc/shadow": "0" * 64}))
    assert refused(directory) == "inventory.json: files['../../etc/shadow']: not a file name of this image format"


def test_a_symlink_in_the_image_is_not_followed(image, tmp_path):
    directory, snap = image
    name = layout.pages_file(snap.process.pid)
    os.rename(directory / name, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", directory / name)
    assert refused(directory) == f"{name}: a symbolic link, not a regular file: not opened"


def test_a_listed_file_that_belongs_to_no_process_is_refused(image):
    directory, snap = image
    extra = layout.xstate_file(snap.process.pid + 1)
    (directory / extra).write_bytes(snap.xstate)
    inventory = load(directory).inventory
    write_inventory(directory, replace(inventory, files={**inventory.files, extra: digest.of_bytes(snap.xstate)}))
    assert refused(directory) == f"inventory.json: files['{extra}']: belongs to no process of the image"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_flips_and_truncations_give_image_error_or_change_nothing(image_of_sleep, tmp_path_factory, data):
    source, snap = image_of_sleep
    directory = tmp_path_factory.mktemp("spoiled") / "img"
    shutil.copytree(source, directory)
    names = sorted(p.name for p in directory.iterdir())
    name = data.draw(st.sampled_from(names), label="file")
    path = directory / name
    size = path.stat().st_size
    if data.draw(st.booleans(), label="truncate"):
        os.truncate(path, data.draw(st.integers(0, max(size - 1, 0)), label="length"))
    else:
        offset = data.draw(st.integers(0, size - 1), label="offset")
        flip = data.draw(st.integers(1, 255), label="xor")
        with open(path, "r+b") as file:
            file.seek(offset)
            byte = file.read(1)[0]
            file.seek(offset)
            file.write(bytes([byte ^ flip]))
    try:
        checkpoint = load(directory)
    except ImageError:
        return
    # Only the inventory's informational kernel_release is not protected by a checksum or a check.
    pristine = load(source)
    assert name == layout.INVENTORY
    assert checkpoint.processes == tuple(replace(p, pages_path=directory / p.pages_path.name,
                                                 vdso_path=directory / p.vdso_path.name,
                                                 xstate_paths={t: directory / x.name for t, x in p.xstate_paths.items()})
                                         for p in pristine.processes)
    assert replace(checkpoint.inventory, kernel_release="") == replace(pristine.inventory, kernel_release="")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_process_json_with_valid_checksum_gives_image_error_only(image_of_sleep, tmp_path_factory, data):
    """A process record edited with its checksum fixed up: decoding and checks must catch it, never crash."""
    source, snap = image_of_sleep
    directory = tmp_path_factory.mktemp("hostile") / "img"
    shutil.copytree(source, directory)
    name = layout.process_file(snap.process.pid)
    record = json.loads((directory / name).read_text())
    parent, key = record, None
    while True:
        key = data.draw(st.sampled_from(sorted(parent) if isinstance(parent, dict) else range(len(parent))))
        child = parent[key]
        if not isinstance(child, (dict, list)) or not child or data.draw(st.booleans()):
            break
        parent = child
    parent[key] = data.draw(st.one_of(st.integers(-2**65, 2**65), st.text(max_size=4), st.none(), st.booleans(),
                                      st.lists(st.integers(), max_size=2), st.just({})))
    (directory / name).write_text(json.dumps(record))
    rehash(directory, name)
    try:
        load(directory)
    except ImageError:
        pass
