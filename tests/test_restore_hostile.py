"""Hostile images, each a real dump edited with its checksums made to match: refused cleanly, never obeyed.

Why each case: they are the probe's findings of issue 10, where a root
restore hung (a 100,001-character path, a FIFO), crashed with a traceback
(a directory as an image file), leaked Python's own texts, restored a
process that died at once (a bad xsave header), or did for the image what
its process could not (a shared file mapping written with page data, a
root-only file reopened read-write for nobody, a mapping at page 0, a pages
file swapped for a symlink after the check). Every test runs the real
`python -m runtime restore` and checks what it said, that no process is
left, and that nothing outside the image changed.
"""

import collections
import contextlib
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restore_support import dumped_sleep, run_cli, wait_for
from runtime.images import codec
from runtime.images.model import FdKind, FileEntry, FileNode
from runtime.restore.handover import ERROR_BYTES_MAX, ErrorChannel
from runtime.images import digest

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
O_RDWR_LARGEFILE = 0o100002
PYTHON_TEXTS = ("Python int", "embedded null", "codec", "Traceback", "too large to convert")


def runtime(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout)


@pytest.fixture
def sleep_image(tmp_path) -> tuple[int, Path]:
    """A `sleep` dumped (and so killed) into tmp_path/images, reaped; its cwd is tmp_path."""
    images = tmp_path / "images"
    target = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    try:
        wait_for(lambda: open(f"/proc/{target.pid}/stat").read().split()[2] == "S", what="sleep to sleep")
        dumped = runtime("dump", "-t", str(target.pid), "-D", str(images))
        assert dumped.returncode == 0, dumped.stderr
    finally:
        if target.poll() is None:
            target.kill()
        target.wait()
    return target.pid, images


def edit_process(images: Path, pid: int, change) -> None:
    """change(record) edits process-PID.json as JSON; the inventory then vouches for the result."""
    name = f"process-{pid}.json"
    record = json.loads((images / name).read_text())
    change(record)
    (images / name).write_text(json.dumps(record))
    refit_checksum(images, name)


def refit_checksum(images: Path, name: str) -> None:
    inventory = json.loads((images / "inventory.json").read_text())
    inventory["files"][name] = digest.of_bytes((images / name).read_bytes())
    (images / "inventory.json").write_text(json.dumps(inventory))


def restore_refused(pid: int, images: Path, *words: str) -> str:
    """Restore must exit 1 with one line naming words, no Python text, and leave no process."""
    result = runtime("restore", "-D", str(images), "-d")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[:2000]
    assert len(lines[0]) < 1000
    for text in PYTHON_TEXTS:
        assert text not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert not os.path.exists(f"/proc/{pid}"), "a refused image must not leave a process behind"
    return lines[0]


def add_fd(record, fd: int, path: str, kind: str = "file", flags: int = 0o100000, pos: int = 0,
           mode: int = 0o100644) -> None:
    """A descriptor fd on a file entry of its own, the entry with these fields."""
    file_id = max(entry["id"] for entry in record["files"]) + 1
    # Through the model, so that an entry of the current format has every field; only its values are hostile.
    record["files"].append(codec.encode(FileEntry(file_id, FdKind(kind), 0, 0, FileNode("/", 0))) |
                           {"flags": flags, "pos": pos, "node": {"path": path, "mode": mode}})
    record["fds"].append({"fd": fd, "file_id": file_id, "cloexec": False})


def file_vma(record) -> dict:
    return next(v for v in record["vmas"] if v["kind"] == "file")


def anon_vma_with_pages(record) -> tuple[int, dict]:
    runs = record["page_runs"]
    for index, vma in enumerate(record["vmas"]):
        if vma["kind"] in ("anon", "heap") and any(vma["start"] <= r["vaddr"] < vma["end"] for r in runs):
            return index, vma
    raise AssertionError("no anonymous mapping with pages in the image")


def digest_tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under root with its mode and content digest (symlinks by their target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path)] = (0, os.readlink(path))
        elif path.is_file():
            found[str(path)] = (path.stat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            found[str(path)] = (path.lstat().st_mode, "")
    return found


def test_a_path_of_100001_characters_is_refused_shortened_in_one_line(sleep_image):
    pid, images = sleep_image
    long_path = "/" + "x" * 100_000
    edit_process(images, pid, lambda r: file_vma(r).update(path=long_path))
    line = restore_refused(pid, images, "path", "100001")
    assert "x" * 100 not in line


def test_an_fd_path_of_100001_characters_is_refused(sleep_image):
    pid, images = sleep_image
    edit_process(images, pid, lambda r: add_fd(r, fd=7, path="/" + "y" * 100_000))
    restore_refused(pid, images, "files[", "100001")


def test_a_file_mapping_of_a_fifo_is_refused_without_opening_it(sleep_image, tmp_path):
    pid, images = sleep_image
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    edit_process(images, pid, lambda r: file_vma(r).update(path=str(fifo)))
    restore_refused(pid, images, "fifo", "a FIFO, not a regular file")


def test_an_fd_on_a_fifo_is_refused_without_opening_it(sleep_image, tmp_path):
    pid, images = sleep_image
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    edit_process(images, pid, lambda r: add_fd(r, fd=7, path=str(fifo)))
    restore_refused(pid, images, "fd 7", "a FIFO")


def test_a_character_device_other_than_a_memory_device_is_not_opened(sleep_image):
    """/dev/ptmx: its open would allocate a terminal; a serial line's would wait for a carrier."""
    pid, images = sleep_image
    edit_process(images, pid, lambda r: add_fd(r, fd=7, kind="chr", path="/dev/ptmx", mode=0o20666, flags=0o100002))
    restore_refused(pid, images, "fd 7", "character device 5:2, not a memory device")


@pytest.mark.parametrize("kind", ["pages", "xstate", "process", "inventory"])
def test_a_directory_in_place_of_an_image_file_is_named(sleep_image, kind):
    pid, images = sleep_image
    name = "inventory.json" if kind == "inventory" else f"{kind}-{pid}.{'json' if kind == 'process' else 'img'}"
    (images / name).unlink()
    (images / name).mkdir()
    restore_refused(pid, images, name, "a directory, not a regular file")


def test_a_fifo_and_a_symlink_in_place_of_image_files_are_named(sleep_image, tmp_path):
    pid, images = sleep_image
    pages = images / f"pages-{pid}.img"
    pages.unlink()
    os.mkfifo(pages)
    restore_refused(pid, images, pages.name, "a FIFO, not a regular file")
    pages.unlink()
    (tmp_path / "elsewhere").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere", pages)
    restore_refused(pid, images, pages.name, "a symbolic link")


@pytest.mark.parametrize("change, words", [
    (lambda r: add_fd(r, fd=7, path="/etc/hostname", flags=2**40), ("].flags",)),
    (lambda r: add_fd(r, fd=7, path="/etc/hostname", pos=2**64 - 1), ("].pos",)),
    (lambda r: add_fd(r, fd=2**31, path="/etc/hostname"), ("].fd", "nr_open")),
    (lambda r: file_vma(r).update(path="/usr/lib/x\u0000y"), ("path", "NUL")),
    (lambda r: r.update(comm="\ud800sleep"), ("comm", "lone surrogate U+D800")),
    (lambda r: r.update(cwd="/" + "\udcff" * 5000), ("cwd", "longer than any path")),
    (lambda r: r.update(personality=2**63), ("personality",)),
    (lambda r: r["itimers"][0].update(value_usec=10**12), ("itimers[0].value_usec",)),
    (lambda r: r["threads"][0]["regs"].update(cs=0x23), ("regs.cs",)),
    (lambda r: r["threads"][0]["altstack"].update(flags=2**63), ("altstack.flags",)),
    (lambda r: r.update(dumpable=2**40), ("dumpable",)),
    (lambda r: r.update(pgid=2**40), ("pgid", "not a process id")),
    (lambda r: r["vmas"][0].update(kind="x" * 100_000), ("vmas[0].kind", "characters")),
], ids=["fd-flags", "fd-pos", "fd-number", "nul", "surrogate", "long-cwd", "personality", "itimer", "cs",
        "altstack", "dumpable", "pgid", "long-enum"])
def test_numbers_and_strings_python_cannot_take_are_refused_by_field(sleep_image, change, words):
    pid, images = sleep_image
    edit_process(images, pid, change)
    restore_refused(pid, images, f"process-{pid}.json", *words)


def test_a_descriptor_above_the_restores_open_files_limit_is_refused_before_the_fork(sleep_image):
    pid, images = sleep_image
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    edit_process(images, pid, lambda r: add_fd(r, fd=limit, path="/etc/hostname"))
    restore_refused(pid, images, f"pid {pid}: descriptor numbers up to", f"highest is {limit}",
                    f"RLIMIT_NOFILE is {limit}")


@pytest.mark.parametrize("field, offset, value, words", [
    ("XSTATE_BV", 512, 1 << 63, ("XSTATE_BV", "this CPU does not have")),
    ("XCOMP_BV", 520, (1 << 63) | 0x7, ("XCOMP_BV",)),
    ("reserved", 540, 1, ("reserved byte",)),
    ("MXCSR", 24, 0x1F80 | (1 << 20), ("MXCSR", "reserved bits")),
])
def test_an_xsave_area_rt_sigreturn_would_refuse_is_refused_before_the_fork(sleep_image, field, offset, value, words):
    pid, images = sleep_image
    name = f"xstate-{pid}.img"
    area = bytearray((images / name).read_bytes())
    if field == "MXCSR":
        struct.pack_into("<I", area, offset, value)
    else:
        struct.pack_into("<Q", area, offset, struct.unpack_from("<Q", area, offset)[0] | value)
    (images / name).write_bytes(area)
    refit_checksum(images, name)
    restore_refused(pid, images, name, *words)


def test_page_data_in_a_shared_file_mapping_is_refused_and_the_file_untouched(sleep_image, tmp_path):
    pid, images = sleep_image
    victim = tmp_path / "victim"
    victim.write_bytes(b"\0" * (1 << 20))
    os.chmod(victim, 0o600)
    before = digest_tree(tmp_path / "victim")

    def share(record):
        index, vma = anon_vma_with_pages(record)
        vma.update(kind="file", shared=True, path=str(victim), offset=0, prot=3)
        record["_index"] = index
    record_index = []
    edit_process(images, pid, lambda r: (share(r), record_index.append(r.pop("_index"))))
    restore_refused(pid, images, "shared file mapping")
    assert digest_tree(tmp_path / "victim") == before
    assert hashlib.sha256(victim.read_bytes()).digest() == hashlib.sha256(b"\0" * (1 << 20)).digest()


def test_a_root_only_file_is_not_reopened_read_write_for_a_nobody_process(sleep_image, tmp_path):
    pid, images = sleep_image
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    def nobody_with_the_secret(record):
        record["creds"].update(uids=[NOBODY] * 4, gids=[NOBODY] * 4, groups=[], cap_permitted=0, cap_effective=0,
                               cap_inheritable=0, cap_ambient=0)
        add_fd(record, fd=7, path=str(secret), flags=O_RDWR_LARGEFILE, mode=0o100600)
    edit_process(images, pid, nobody_with_the_secret)
    before = os.stat(secret)
    restore_refused(pid, images, "fd 7", "Permission denied")
    after = os.stat(secret)
    assert (after.st_atime_ns, after.st_mtime_ns, secret.read_text()) == \
        (before.st_atime_ns, before.st_mtime_ns, "root only\n")


def test_a_mapping_at_address_zero_is_refused(sleep_image):
    pid, images = sleep_image

    def page_zero(record):
        anon = next(v for v in record["vmas"] if v["kind"] == "anon")
        record["vmas"].insert(0, {**anon, "start": 0, "end": 4096})
    edit_process(images, pid, page_zero)
    restore_refused(pid, images, "vmas[0].start", "mmap_min_addr")


class _Inotify:
    """The kernel's inotify, watching one directory for files closed after reading."""

    IN_CLOSE_NOWRITE = 0x10
    _libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, directory: Path):
        self.fd = self._libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0
        assert self._libc.inotify_add_watch(self.fd, os.fsencode(directory), self.IN_CLOSE_NOWRITE) >= 0

    def closed_names(self):
        while True:
            data = os.read(self.fd, 4096)
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                yield data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length

    def close(self):
        os.close(self.fd)


def test_a_pages_file_swapped_for_a_symlink_after_the_check_is_not_followed(sleep_image, tmp_path):
    """The loader reads the xstate file last; as soon as it is closed the pages file becomes a symlink."""
    pid, images = sleep_image
    pages = images / f"pages-{pid}.img"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xcc" * pages.stat().st_size)
    watch = _Inotify(images)
    swapped = threading.Event()

    def swap_after_the_check():
        for name in watch.closed_names():
            if name == f"xstate-{pid}.img":
                os.symlink(garbage, images / "swap")
                os.rename(images / "swap", pages)
                swapped.set()
                return
    swapper = threading.Thread(target=swap_after_the_check, daemon=True)
    swapper.start()
    try:
        result = runtime("restore", "-D", str(images), "-d")
        assert swapped.wait(5), "the loader never read the xstate file"
        assert result.returncode == 0, result.stderr
        # Pages of int3 would have killed it at its first instruction: it sleeps, as dumped.
        time.sleep(0.3)
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "S"
    finally:
        watch.close()
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the restored sleep to go")


def test_an_unreadable_image_says_permission_denied(sleep_image):
    """The loader as a user who may pass through the directory but not read its 0600 files.

    Run by Debian's python3 with the repository on its path: the runtime's own
    interpreter lives under /root, which nobody cannot enter; the loader needs
    nothing beyond the standard library.
    """
    pid, images = sleep_image
    shared = Path(tempfile.mkdtemp(prefix="revive-unreadable-"))
    try:
        os.chmod(shared, 0o711)
        shutil.copytree(images, shared / "images")
        os.chmod(shared / "images", 0o711)
        probe = ("import sys\nfrom runtime.errors import ReviveError\nfrom runtime.images.loader import load\n"
                 "try:\n    load(sys.argv[1])\nexcept ReviveError as exc:\n    print(exc)\n")
        result = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                 "/usr/bin/python3", "-c", probe, str(shared / "images")],
                                cwd=REPO, capture_output=True, text=True, timeout=30,
                                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
        assert result.stdout.strip() == "inventory.json: cannot open: permission denied", result.stderr
    finally:
        shutil.rmtree(shared)


def test_the_error_channel_is_drained_while_the_child_runs():
    """A child that says far more than a pipe holds is not blocked, and what it said comes back bounded."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.write(write_end, b"child:" + b"z" * (1 << 20))
        os._exit(1)
    os.close(write_end)
    channel = ErrorChannel(read_end)
    _, status = os.waitpid(child, 0)  # would wait forever if nobody read the pipe
    assert os.waitstatus_to_exitcode(status) == 1
    data = channel.read()
    assert len(data) == ERROR_BYTES_MAX and data.startswith(b"child:zzz")


# -- the fuzz: a real image's metadata mutated at random, checksums refitted, restored ---------------

FUZZ_TIMEOUT = 8.0
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ runtime\.[\w.]+ WARNING: ")
FUZZ_OUTCOMES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory):
    """A pristine image of a `sleep`, and a sandbox of files the mutated images may name."""
    root = tmp_path_factory.mktemp("fuzz")
    pid, images = _dump_sleep(root)
    sandbox = root / "sandbox"
    sandbox.mkdir()
    (sandbox / "file").write_bytes(b"sandbox file\n" * 1000)
    (sandbox / "secret").write_text("root only\n")
    os.chmod(sandbox / "secret", 0o600)
    os.mkfifo(sandbox / "fifo")
    (sandbox / "dir").mkdir()
    yield pid, images, sandbox
    print(f"\nfuzz outcomes: {dict(FUZZ_OUTCOMES)} of {sum(FUZZ_OUTCOMES.values())} images")


def _dump_sleep(root: Path) -> tuple[int, Path]:
    images = root / "pristine"
    return dumped_sleep(images, cwd=root), images


def _odd_values(value, sandbox: Path):
    """Replacements for a JSON value: extremes of its own type, and values of other types."""
    numbers = [0, 1, 4095, 4096, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1]
    texts = ["", "/", "/" + "x" * 100_000, "/" + "a/" * 2100, "/a\0b", "\ud800", "/\udcff\udcfe", "/é/ß", "a\nb",
             "../../etc/passwd", "/proc/self/mem", "/dev/zero", "/dev/null",
             *(str(sandbox / name) for name in ("file", "secret", "fifo", "dir", "missing"))]
    if isinstance(value, bool):
        return st.sampled_from([not value, None, 0, "true"])
    if isinstance(value, int):
        return st.one_of(st.sampled_from(numbers), st.integers(0, 2**64 - 1), st.just(str(value)))
    if isinstance(value, str):
        return st.one_of(st.sampled_from(texts), st.text(max_size=8), st.just(0))
    if isinstance(value, list):
        variants = [[], value + value[-1:], value[:-1], value[::-1], None]
        return st.sampled_from([v for v in variants if v != value] or [None])
    if isinstance(value, dict):
        first = sorted(value)[0] if value else None
        return st.sampled_from([{}, {k: v for k, v in value.items() if k != first}, {**value, "unknown": 1}, []])
    return st.sampled_from([0, "", str(sandbox / "file"), [], {}])


def _mutate(record, data, sandbox: Path) -> str:
    """Replace one node of record, picked by walking down at random; the node's path, for the report."""
    parent, path = record, ""
    while True:
        keys = sorted(parent) if isinstance(parent, dict) else list(range(len(parent)))
        key = data.draw(st.sampled_from(keys), label="key")
        path += f"[{key!r}]"
        child = parent[key]
        if not isinstance(child, (dict, list)) or not child or data.draw(st.booleans(), label="stop"):
            break
        parent = child
    parent[key] = data.draw(_odd_values(child, sandbox), label="value")
    return path


def _kill_restored(pid: int) -> None:
    """SIGKILL the restored process and see it gone (reaped by us if it is ours, else by its new parent)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"restored pid {pid} to be reaped")


# About 0.8 s per image (a Python start and a restore): 45 keep the test under 40 s.
@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_metadata_is_refused_in_one_line_or_restored_never_worse(fuzz_world, data):
    pid, pristine, sandbox = fuzz_world
    images = Path(tempfile.mkdtemp(prefix="revive-fuzz-"))
    try:
        shutil.copytree(pristine, images, dirs_exist_ok=True)
        name = data.draw(st.sampled_from([f"process-{pid}.json"] * 4 + ["inventory.json"]), label="file")
        record = json.loads((images / name).read_text())
        _mutate(record, data, sandbox)
        (images / name).write_text(json.dumps(record))
        if name != "inventory.json":
            refit_checksum(images, name)
        before = digest_tree(sandbox)
        try:
            result = subprocess.run([sys.executable, "-m", "runtime", "restore", "-D", str(images), "-d"],
                                    cwd=REPO, capture_output=True, text=True, timeout=FUZZ_TIMEOUT,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            FUZZ_OUTCOMES["hang"] += 1
            raise AssertionError(f"restore hung for {FUZZ_TIMEOUT} s") from None
        if result.returncode == 0:
            FUZZ_OUTCOMES["restored"] += 1
            assert os.path.exists(f"/proc/{pid}"), "exit 0 but no restored process"
            _kill_restored(pid)
        else:
            # Warnings the runtime logs on its way (a hard rlimit capped at ours) are not the refusal.
            lines = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]
            assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("revive: "), result.stderr[:3000]
            assert len(lines[0]) < 1000 and not any(text in lines[0] for text in PYTHON_TEXTS), lines[0]
            FUZZ_OUTCOMES["refused by the loader" if "json: " in lines[0] and f"pid {pid}:" not in lines[0]
                          else "refused later"] += 1
            assert not os.path.exists(f"/proc/{pid}"), "a refused image left a process behind"
        assert digest_tree(sandbox) == before, "a restore changed a file outside the image"
    finally:
        shutil.rmtree(images)
