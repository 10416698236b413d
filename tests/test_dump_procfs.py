"""The /proc readers against real processes whose state is known."""

import mmap
import os
import struct

import pytest

from dump_support import start_target, target_path
from runtime.errors import NoSuchProcess
from runtime.images.model import VmaKind
from runtime.kernel.procfs import auxv, fds, maps, pagemap, stat, status, vdso
from runtime.kernel.procfs.fds import FileKind

PAGE = 4096


@pytest.fixture
def refused_target(tmp_path, request):
    target = start_target([str(target_path("dump_refused")), request.param], tmp_path)
    yield target
    target.stop()


def mapping_at(pid, addr):
    return next(m for m in maps.read_mappings(pid) if m.start <= addr < m.end)


def pagemap_entries(pid, start, npages):
    """The raw 8-byte pagemap entries: an independent view of presence (bit 63) and swap (bit 62)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        return struct.unpack(f"<{npages}Q", f.read(npages * 8))


def test_maps_gives_every_kind_of_mapping(pages_target):
    pid = pages_target.pid
    anon = mapping_at(pid, pages_target.addr("anon")).vma()
    # The kernel may merge the region with a neighbouring anonymous one.
    assert anon.end - pages_target.addr("anon") >= 64 * PAGE
    assert (anon.kind, anon.prot, anon.shared) == (VmaKind.ANON, mmap.PROT_READ | mmap.PROT_WRITE, False)
    file = mapping_at(pid, pages_target.addr("file")).vma()
    assert file.kind is VmaKind.FILE and file.path.endswith("/backing") and file.offset == 0 and not file.shared
    assert mapping_at(pid, pages_target.addr("none")).vma().prot == 0
    gd = mapping_at(pid, pages_target.addr("gd"))
    assert "gd" in gd.vmflags and gd.vma().growsdown and gd.vma().kind is VmaKind.ANON
    shanon = mapping_at(pid, pages_target.addr("shanon"))
    assert shanon.shared_anon and not shanon.file_backed and shanon.vma().shared
    kinds = {m.name: m.vma().kind for m in maps.read_mappings(pid) if m.name.startswith("[") and m.name != "[vsyscall]"}
    assert kinds["[stack]"] is VmaKind.STACK and kinds["[vdso]"] is VmaKind.VDSO
    assert kinds["[vvar]"] is VmaKind.VVAR and kinds["[heap]"] is VmaKind.HEAP
    with pytest.raises(ValueError):
        next(m for m in maps.read_mappings(pid) if m.name == "[vsyscall]").vma()


def test_pagemap_scan_matches_mincore_and_pagemap_entries(pages_target):
    pid, anon = pages_target.pid, pages_target.addr("anon")
    ranges = pagemap.scan(pid, anon, anon + 64 * PAGE)
    scanned = {(r.start - anon) // PAGE + i: r.categories for r in ranges for i in range(r.nr_pages)}
    resident = {i for i, c in enumerate(pages_target.info["mincore"]) if c == "1"}
    assert set(scanned) == resident
    entries = pagemap_entries(pid, anon, 64)
    assert set(scanned) == {i for i, e in enumerate(entries) if e >> 62}
    # Written pages are ordinary anonymous pages; pages only read map the shared zero page.
    assert {i for i, c in scanned.items() if not c & pagemap.PAGE_IS_PFNZERO} == {i for i in range(64) if i % 3 != 2}
    assert {i for i, c in scanned.items() if c & pagemap.PAGE_IS_PFNZERO} == {i for i in range(64) if i % 6 == 2}


def test_pagemap_scan_tells_file_pages_from_copied_ones(pages_target):
    pid, file = pages_target.pid, pages_target.addr("file")
    ranges = pagemap.scan(pid, file, file + 8 * PAGE)
    categories = {(r.start - file) // PAGE + i: r.categories for r in ranges for i in range(r.nr_pages)}
    assert set(categories) == set(range(8))
    assert {i for i, c in categories.items() if not c & pagemap.PAGE_IS_FILE} == {2, 5}


def test_pagemap_scan_follows_walk_end_past_a_full_vector(pages_target, monkeypatch):
    """With a vector of 3 regions the ~40 regions of the anon area need many ioctls; same result."""
    pid, anon = pages_target.pid, pages_target.addr("anon")
    whole = pagemap.scan(pid, anon, anon + 64 * PAGE)
    assert len(whole) > 3
    monkeypatch.setattr(pagemap, "_VEC_LEN", 3)
    assert pagemap.scan(pid, anon, anon + 64 * PAGE) == whole


def test_status_and_stat_agree_with_the_kernel(pages_target):
    pid = pages_target.pid
    st = status.read_status(pid)
    assert (st.tgid, st.ppid, st.threads, st.tracer_pid) == (pid, os.getpid(), 1, 0)
    assert st.creds.uids == (os.getuid(),) * 4 and st.creds.groups == tuple(sorted(os.getgroups()))
    assert st.creds.cap_effective == st.creds.cap_permitted
    s = stat.read_stat(pid)
    assert (s.comm, s.ppid, s.pgid, s.sid) == ("dump_pages", os.getpid(), pid, pid)
    assert 0 < s.start_code < s.end_code <= s.start_data < s.end_data <= s.start_brk
    assert s.arg_start < s.arg_end <= s.env_start < s.env_end
    args = open(f"/proc/{pid}/cmdline", "rb").read()
    assert s.arg_end - s.arg_start == len(args)
    assert stat.read_personality(pid) == 0


def test_auxv_points_at_the_vdso(pages_target):
    pid = pages_target.pid
    vector = auxv.read_auxv(pid)
    assert vector[-2:] == (auxv.AT_NULL, 0)
    vdso_map = next(m for m in maps.read_mappings(pid) if m.name == "[vdso]")
    assert auxv.auxv_value(vector, auxv.AT_SYSINFO_EHDR) == vdso_map.start


def test_vdso_symbols_are_those_of_the_running_kernel(pages_target):
    pid = pages_target.pid
    vdso_map = next(m for m in maps.read_mappings(pid) if m.name == "[vdso]")
    found = vdso.read_vdso(pid, vdso_map.start, vdso_map.end - vdso_map.start)
    names = {s.name: s for s in found.symbols}
    assert {"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu"} <= set(names)
    own = next(m for m in maps.read_mappings(os.getpid()) if m.name == "[vdso]")
    with open("/proc/self/mem", "rb") as mem:
        mem.seek(own.start)
        assert mem.read(own.end - own.start) == found.image
    assert found.image[names["__vdso_time"].offset:][:1] != b"\0"


def test_fds_report_kind_offset_and_flags(tmp_path):
    target = start_target([str(target_path("dump_state")), str(tmp_path / "state-file")], tmp_path)
    try:
        files = {f.fd: f for f in fds.read_open_files(target.pid)}
    finally:
        target.stop()
    assert files[0].kind is FileKind.CHAR and files[0].link == "/dev/null"
    assert files[1].kind is FileKind.REGULAR and files[1].link == str(target.out)
    data = files[int(target.info["file_fd"])]
    assert (data.kind, data.link, data.pos, data.flags & os.O_ACCMODE) == (FileKind.REGULAR,
                                                                           str(tmp_path / "state-file"), 12, os.O_RDWR)
    assert not data.cloexec
    assert files[7].kind is FileKind.CHAR and files[7].flags & os.O_ACCMODE == os.O_WRONLY


@pytest.mark.parametrize("refused_target, kind", [("socket", FileKind.SOCKET), ("pidfd", FileKind.ANON_INODE),
                                                  ("pipe", FileKind.PIPE)], indirect=["refused_target"])
def test_fds_classify_what_the_dump_refuses(refused_target, kind):
    files = {f.fd: f for f in fds.read_open_files(refused_target.pid)}
    assert files[3].kind is kind


def test_readers_name_a_vanished_process(tmp_path):
    target = start_target([str(target_path("dump_refused")), "pipe"], tmp_path)
    pid = target.pid
    target.stop()
    with pytest.raises(NoSuchProcess, match=f"pid {pid}"):
        status.read_status(pid)
