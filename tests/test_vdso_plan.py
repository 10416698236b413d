"""The vDSO decision and proxy plan against this machine's real vDSO, and the patched code run for real."""

import ctypes
import dataclasses
import hashlib
import io
import mmap
import os
import time

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from dump_support import start_target, target_path
from runtime.errors import VdsoError
from runtime.images.model import TASK_SIZE, VdsoInfo
from runtime.kernel.procfs import maps
from runtime.kernel.procfs.vdso import ElfError, parse_symbols
from runtime.mm import vdso
from vdso_images import rename_symbols, shift_functions

PAGE = 4096
SHIFT = 0x40
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


@pytest.fixture(scope="module")
def running():
    return vdso.read_running_vdso()


def info_of(running, image=None, start=None, proxy=False):
    """The VdsoInfo a dump of this process would record (optionally with other bytes)."""
    image = running.vdso.image if image is None else image
    start = running.vdso.start if start is None else start
    vvar, vclock = running.piece(vdso.VmaKind.VVAR), running.piece(vdso.VmaKind.VVAR_VCLOCK)
    delta = start - running.vdso.start
    return VdsoInfo(start, len(image), hashlib.sha256(image).hexdigest(), parse_symbols(image),
                    vvar.start + delta, vvar.size, vclock.start + delta, vclock.size, proxy)


def disasm(code, address, count):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return [(i.mnemonic, i.op_str) for i in md.disasm(code, address)][:count]


class Executable:
    """An anonymous RWX mapping of this process holding a vDSO image, to call into."""

    def __init__(self, size):
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.buf = (ctypes.c_char * size).from_buffer(self.map)
        self.addr = ctypes.addressof(self.buf)

    def load(self, image):
        self.map[:len(image)] = image

    def function(self, offset, restype, *argtypes):
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.addr + offset)

    def close(self):
        del self.buf
        self.map.close()


@pytest.fixture
def executable(running):
    area = Executable(len(running.vdso.image))
    yield area
    area.close()


def test_symbols_read_with_struct_are_the_ones_pyelftools_reads(running):
    elf = ELFFile(io.BytesIO(running.vdso.image))
    base = min(seg["p_vaddr"] for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD")
    expected = sorted((sym.name, sym["st_value"] - base, sym["st_size"])
                      for sym in elf.get_section_by_name(".dynsym").iter_symbols()
                      if sym.name and sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS")
                      and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT"))
    assert [(s.name, s.offset, s.size) for s in parse_symbols(running.vdso.image)] == expected
    assert any(name == "__vdso_clock_gettime" for name, _, _ in expected)


@pytest.mark.parametrize("cut", [16, 64, 0x200])
def test_a_truncated_vdso_image_is_an_elf_error_not_a_crash(running, cut):
    with pytest.raises(ElfError):
        parse_symbols(running.vdso.image[:cut])


def test_running_vdso_moves_as_one_block_with_its_vvar_pages(running):
    kinds = [p.kind for p in running.pieces]
    assert kinds == [vdso.VmaKind.VVAR, vdso.VmaKind.VVAR_VCLOCK, vdso.VmaKind.VDSO]
    assert running.vdso.start == running.pieces[-1].start
    assert running.size == sum(p.size for p in running.pieces)
    assert {s.name for s in running.vdso.symbols} >= {"__vdso_clock_gettime", "__vdso_getcpu", "__vdso_time"}


def test_same_vdso_remaps_and_forced_proxy_proxies(running):
    same = info_of(running)
    assert vdso.decide(same, running, vdso.VdsoMode.AUTO).path is vdso.VdsoPath.REMAP
    assert vdso.decide(same, running, vdso.VdsoMode.REMAP).path is vdso.VdsoPath.REMAP
    forced = vdso.decide(same, running, vdso.VdsoMode.PROXY)
    assert forced.path is vdso.VdsoPath.PROXY and "--vdso=proxy" in forced.reason
    assert vdso.plan_remap(same, running) == tuple(vdso.Move(p.start, p.start, p.size) for p in running.pieces)


def test_different_vdso_proxies_and_refuses_forced_remap(running):
    other = info_of(running, shift_functions(running.vdso.image, SHIFT))
    decision = vdso.decide(other, running, vdso.VdsoMode.AUTO)
    assert decision.path is vdso.VdsoPath.PROXY and "differs" in decision.reason
    with pytest.raises(VdsoError, match="--vdso=remap impossible"):
        vdso.decide(other, running, vdso.VdsoMode.REMAP)
    marked = dataclasses.replace(info_of(running), proxy=True)
    assert "proxy revive installed" in vdso.decide(marked, running, vdso.VdsoMode.AUTO).reason


def test_shifted_vdso_moves_every_symbol(running):
    shifted = parse_symbols(shift_functions(running.vdso.image, SHIFT))
    original = {s.name: s for s in running.vdso.symbols}
    assert {s.name for s in shifted} == set(original)
    for sym in shifted:
        assert (sym.offset, sym.size) == (original[sym.name].offset + SHIFT, original[sym.name].size)


def test_block_goes_after_the_last_vma_when_it_fits():
    restored = [(0x400000, 0x401000), (0x7F0000000000, 0x7F0000002000), (0x7FFD00000000, 0x7FFD00021000)]
    assert vdso.choose_address(restored, 0x8000) == 0x7FFD00021000
    reserved = [(0x7FFD00021000, 0x7FFD00030000)]
    assert vdso.choose_address(restored, 0x8000, reserved) == 0x7FFD00030000


def test_block_goes_into_the_highest_hole_when_nothing_fits_after(tmp_path):
    target = start_target([str(target_path("vdso_calls")), "top"], tmp_path)
    try:
        layout = [(m.start, m.end) for m in maps.read_mappings(target.pid) if m.name != "[vsyscall]"]
    finally:
        target.stop()
    assert max(end for _, end in layout) == TASK_SIZE
    start = vdso.choose_address(layout, 0x8000)
    assert all(start + 0x8000 <= s or start >= e for s, e in layout)
    holes_above = [s for s, _ in layout if s >= start + 0x8000]
    gap_above = min(holes_above) - (start + 0x8000)
    assert gap_above == 0  # top-down: the block ends where the next mapping starts


def test_patched_entries_disassemble_as_jumps_then_int3(running):
    old = info_of(running, shift_functions(running.vdso.image, SHIFT), start=0x7F0000000000)
    image = shift_functions(running.vdso.image, SHIFT)
    near, far = 0x7F0000100000, 0x7FFF00000000  # within and beyond rel32 reach of the old entries
    for new_start, kind in ((near, vdso.PatchKind.REL32), (far, vdso.PatchKind.ABS64)):
        patched, patches = vdso.patch_entries(image, old.vdso_start, old.symbols, new_start, running.vdso.symbols)
        new_of = {s.name: new_start + s.offset for s in running.vdso.symbols}
        assert {p.names[0] for p in patches} == {s.name for s in running.vdso.symbols if s.name.startswith("__vdso_")}
        for p in patches:
            assert p.kind is kind and p.target == new_of[p.names[0]]
            entry = old.vdso_start + p.offset
            if kind is vdso.PatchKind.REL32:
                assert disasm(patched[p.offset:p.offset + 5], entry, 1) == [("jmp", hex(p.target))]
                body = 5
            else:
                assert disasm(patched[p.offset:p.offset + 13], entry, 2) == [
                    ("movabs", f"r11, {hex(p.target)}"), ("jmp", "r11")]
                body = 13
            assert patched[p.offset + body:p.offset + p.size] == b"\xcc" * (p.size - body)


def test_patched_entries_reach_the_running_vdso(running, executable):
    """Run the patched old code: each entry jumps into this process's own [vdso]."""
    image = shift_functions(running.vdso.image, SHIFT)
    symbols = parse_symbols(image)
    patched, _ = vdso.patch_entries(image, executable.addr, symbols, running.vdso.start, running.vdso.symbols)
    executable.load(patched)
    offset = {s.name: s.offset for s in symbols}
    ts = (ctypes.c_long * 2)()
    clock_gettime = executable.function(offset["__vdso_clock_gettime"], ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    for clock in (time.CLOCK_REALTIME, time.CLOCK_MONOTONIC, time.CLOCK_BOOTTIME):
        before = time.clock_gettime_ns(clock)
        assert clock_gettime(clock, ts) == 0
        after = time.clock_gettime_ns(clock)
        assert before <= ts[0] * 10**9 + ts[1] <= after
    vtime = executable.function(offset["__vdso_time"], ctypes.c_long, ctypes.c_void_p)
    assert abs(vtime(None) - time.time()) <= 1
    cpu = ctypes.c_uint(99)
    getcpu = executable.function(offset["__vdso_getcpu"], ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p)
    os.sched_setaffinity(0, {0})
    try:
        assert getcpu(ctypes.byref(cpu), None, None) == 0 and cpu.value == 0
    finally:
        os.sched_setaffinity(0, range(os.cpu_count()))


def test_symbols_missing_from_the_running_vdso_get_syscall_stubs(running, executable):
    missing = {"__vdso_clock_gettime", "clock_gettime", "__vdso_time", "time"}
    fewer = [s for s in running.vdso.symbols if s.name not in missing]
    patched, patches = vdso.patch_entries(running.vdso.image, executable.addr, running.vdso.symbols,
                                          running.vdso.start, fewer)
    stubs = {p.names[0]: p for p in patches if p.kind is vdso.PatchKind.SYSCALL}
    assert {n: p.target for n, p in stubs.items()} == {"__vdso_clock_gettime": 228, "__vdso_time": 201}
    entry = stubs["__vdso_clock_gettime"].offset
    assert disasm(patched[entry:entry + 8], executable.addr + entry, 3) == [
        ("mov", "eax, 0xe4"), ("syscall", ""), ("ret", "")]
    executable.load(patched)
    ts = (ctypes.c_long * 2)()
    clock_gettime = executable.function(entry, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert clock_gettime(time.CLOCK_MONOTONIC, ts) == 0
    assert before <= ts[0] * 10**9 + ts[1] <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    vtime = executable.function(stubs["__vdso_time"].offset, ctypes.c_long, ctypes.c_void_p)
    assert abs(vtime(None) - time.time()) <= 1


def test_symbol_without_a_syscall_missing_from_the_running_vdso_is_an_error(running):
    old_image = rename_symbols(running.vdso.image, {"__vdso_getrandom": "__vdso_getrandoX"})
    with pytest.raises(VdsoError, match="lacks __vdso_getrandoX"):
        vdso.patch_entries(old_image, 0x7F0000000000, parse_symbols(old_image), running.vdso.start,
                           running.vdso.symbols)


def test_plan_marks_the_copy_and_a_dump_finds_it(running, executable):
    old = info_of(running, start=executable.addr)
    restored = [(0x400000, 0x500000), (old.vdso_start, old.vdso_start + old.vdso_size)]
    plan = vdso.plan_proxy(old, running.vdso.image, running, restored)
    assert plan.old_start == executable.addr and len(plan.image) == old.vdso_size
    assert vdso.proxy_origin(plan.image) == running.vdso.sha256
    assert vdso.proxy_origin(running.vdso.image) is None
    assert parse_symbols(plan.image) == running.vdso.symbols  # the ELF itself is untouched
    assert [m.new_addr - plan.moves[0].new_addr for m in plan.moves] == [p.start - running.start
                                                                          for p in running.pieces]
    assert plan.new_vdso_start == plan.moves[-1].new_addr
    assert all(m.new_addr >= max(e for _, e in restored) for m in plan.moves)
    # A proxy of a proxy keeps naming the vDSO it was first made from.
    again = vdso.plan_proxy(dataclasses.replace(old, proxy=True), plan.image, running, restored)
    assert vdso.proxy_origin(again.image) == running.vdso.sha256

    pid = os.getpid()
    assert vdso.find_proxy(pid, maps.read_mappings(pid)) is None
    executable.load(plan.image)
    assert libc.mprotect(executable.addr, old.vdso_size, mmap.PROT_READ | mmap.PROT_EXEC) == 0
    found = vdso.find_proxy(pid, maps.read_mappings(pid))
    assert found is not None and found.start == executable.addr
