"""The vDSO at restore: remap the running kernel's one or proxy the dumped one, and the proxy's plan.

Why a decision at all: a process holds addresses inside the vDSO it was
started with (glibc caches the function pointers it looked up at start-up,
return addresses may sit on the stack). The running kernel's vDSO can be
moved (mremap of the special mapping, its [vvar]/[vvar_vclock] data pages
with it) but not rewritten: if it is byte for byte the dumped one, moving it
to the dumped addresses is all a restore needs (the *remap* path). If it is
not, the old offsets mean nothing in the new one, and old vDSO code must not
run against the new kernel's data pages (different layout: wrong time
without any error). So the *proxy*: the dumped vDSO bytes go back at their
old address, every exported entry point there jumps to the same symbol in
the running vDSO, which (with its vvar pages, at the same distances, since
its code addresses them RIP-relative) moves to a free address, and the rest
of every old function is int3 so that nothing runs old code unnoticed.

The patched copy carries a marker in the unused tail of its last page (past
everything the ELF headers describe), so a later dump can tell it from the
kernel's own [vdso]: `find_proxy` is the one place that reads it. See
docs/vdso.md for the whole story, including the syscall-stub fallback for
symbols the running vDSO lacks.
"""

from __future__ import annotations

import enum
import hashlib
import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.errors import RestoreError, VdsoError
from runtime.images.model import KERNEL_MAPPING_KINDS, PAGE_SIZE, Process, VdsoInfo, VdsoSymbol, VmaKind
from runtime.kernel.procfs.maps import SPECIAL_KINDS, Mapping, read_layout
from runtime.kernel.procfs.mem import read_memory
from runtime.kernel.procfs.vdso import Vdso, read_vdso
from runtime.mm.address_space import free_gaps


class VdsoMode(enum.Enum):
    """The user's choice (`restore --vdso=`)."""

    AUTO = "auto"
    REMAP = "remap"
    PROXY = "proxy"


class VdsoPath(enum.Enum):
    """What a restore does with the vDSO."""

    REMAP = "remap"
    PROXY = "proxy"


@dataclass(frozen=True)
class Decision:
    path: VdsoPath
    reason: str


@dataclass(frozen=True)
class Piece:
    """One of the running kernel's special mappings that move as a block."""

    kind: VmaKind
    start: int
    size: int


@dataclass(frozen=True)
class RunningVdso:
    """The running kernel's vDSO as this process maps it, with its vvar pages (address order)."""

    vdso: Vdso
    pieces: tuple[Piece, ...]

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def size(self) -> int:
        return self.pieces[-1].start + self.pieces[-1].size - self.start

    @property
    def vdso_offset(self) -> int:
        """Distance from the block's start to the [vdso] itself."""
        return self.vdso.start - self.start

    def piece(self, kind: VmaKind) -> Piece | None:
        return next((p for p in self.pieces if p.kind == kind), None)


@dataclass(frozen=True)
class Move:
    """mremap(old_addr, size) to new_addr: one piece of the running vDSO block."""

    old_addr: int
    new_addr: int
    size: int


class PatchKind(enum.Enum):
    REL32 = "jmp rel32"
    ABS64 = "movabs %r11; jmp *%r11"
    SYSCALL = "syscall stub"


@dataclass(frozen=True)
class Patch:
    """What one old entry point (and its aliases) became."""

    names: tuple[str, ...]  # the old symbols at this offset
    offset: int  # in the old vDSO
    size: int  # bytes of the old function, all rewritten
    kind: PatchKind
    target: int  # new address (jumps) or syscall number (stub)


@dataclass(frozen=True)
class ProxyPlan:
    old_start: int  # where the patched old vDSO is mapped r-x
    image: bytes  # its patched bytes, marked as a proxy
    new_vdso_start: int  # where the running [vdso] ends up
    moves: tuple[Move, ...]  # the running block's pieces, to their new places
    patches: tuple[Patch, ...]


@dataclass(frozen=True)
class VdsoPlan:
    """Everything a restore does with the vDSO: the path, the running block's moves, the proxy."""

    decision: Decision
    running: RunningVdso
    moves: tuple[Move, ...]
    proxy: ProxyPlan | None = None

    @property
    def keep(self) -> tuple[tuple[int, int], ...]:
        """Where the running pieces are now: the restorer must not unmap them before it moves them."""
        return tuple((p.start, p.start + p.size) for p in self.running.pieces)

    @property
    def destinations(self) -> tuple[tuple[int, int], ...]:
        """Where they go: nothing else of the restore may be placed there."""
        return tuple((m.new_addr, m.new_addr + m.size) for m in self.moves)


# Every entry point of every x86_64 vDSO so far has a system call that does
# the same with the same arguments in the same registers (rdi, rsi, rdx), so a
# three-instruction stub is a correct, if slower, stand-in when the running
# vDSO lacks the symbol (arch/x86/entry/syscalls/syscall_64.tbl). getrandom is
# not here: the vDSO's takes an opaque state the syscall does not.
FALLBACK_SYSCALLS = {
    "gettimeofday": 96,
    "time": 201,
    "clock_gettime": 228,
    "clock_getres": 229,
    "getcpu": 309,
}
VDSO_PREFIX = "__vdso_"

INT3 = b"\xcc"
# jmp rel32 (e9); movabs $imm64, %r11 (49 bb) + jmp *%r11 (41 ff e3);
# mov $imm32, %eax (b8; zero-extends into rax) + syscall (0f 05) + ret (c3).
REL32_SIZE = 5
ABS64_SIZE = 13
SYSCALL_STUB_SIZE = 8

# The marker: magic, then the digest of the vDSO the copy was made from.
PROXY_MAGIC = b"revive:vdsoproxy"
MARKER_SIZE = len(PROXY_MAGIC) + 32

ELF_MAGIC = b"\x7fELF"


def read_running_vdso() -> RunningVdso:
    """The running kernel's vDSO and vvar pages as mapped in this very process."""
    pid = os.getpid()
    pieces = tuple(Piece(kind, m.start, m.end - m.start) for m in read_layout(pid)
                   for kind in [SPECIAL_KINDS.get(m.name)] if kind in KERNEL_MAPPING_KINDS)
    vdso = next((p for p in pieces if p.kind == VmaKind.VDSO), None)
    if vdso is None:
        raise RestoreError(pid, "this process has no [vdso]: the kernel does not map one (vdso=0?)")
    for left, right in zip(pieces, pieces[1:]):
        if left.start + left.size != right.start:
            raise RestoreError(pid, f"[vdso] and its vvar pages are not contiguous at {right.start:#x}")
    return RunningVdso(read_vdso(pid, vdso.start, vdso.size), pieces)


def _vvar_layout(info: VdsoInfo) -> tuple[tuple[int, int], ...]:
    """(offset from [vdso], size) of each vvar piece, the layout its code relies on."""
    return tuple((start - info.vdso_start, size) for start, size in
                 ((info.vvar_start, info.vvar_size), (info.vvar_vclock_start, info.vvar_vclock_size))
                 if start is not None)


def _running_vvar_layout(running: RunningVdso) -> tuple[tuple[int, int], ...]:
    return tuple((p.start - running.vdso.start, p.size) for p in running.pieces if p.kind != VmaKind.VDSO)


def decide(dumped: VdsoInfo, running: RunningVdso, mode: VdsoMode) -> Decision:
    """Which path a restore takes for this dumped vDSO on this kernel, and why."""
    differs = None
    if dumped.proxy:
        differs = "the dumped vDSO is a proxy revive installed (a patched copy of an older vDSO)"
    elif dumped.sha256 != running.vdso.sha256:
        differs = f"the running vDSO differs (sha256 {running.vdso.sha256[:16]}…, dumped {dumped.sha256[:16]}…)"
    elif _vvar_layout(dumped) != _running_vvar_layout(running):
        differs = "the running vDSO's vvar pages are laid out differently"
    if mode == VdsoMode.PROXY:
        return Decision(VdsoPath.PROXY, "forced by --vdso=proxy" + (f"; {differs}" if differs else ""))
    if differs is None:
        return Decision(VdsoPath.REMAP, f"the running vDSO is the dumped one (sha256 {dumped.sha256[:16]}…)")
    if mode == VdsoMode.REMAP:
        raise VdsoError(f"--vdso=remap impossible: {differs}")
    return Decision(VdsoPath.PROXY, differs)


def plan_remap(dumped: VdsoInfo, running: RunningVdso) -> tuple[Move, ...]:
    """Move each running piece to where the dumped process had it (decide() said they match)."""
    dest = {VmaKind.VDSO: dumped.vdso_start, VmaKind.VVAR: dumped.vvar_start,
            VmaKind.VVAR_VCLOCK: dumped.vvar_vclock_start}
    return tuple(Move(p.start, dest[p.kind], p.size) for p in running.pieces)


def _block_moves(running: RunningVdso, block_start: int) -> tuple[Move, ...]:
    return tuple(Move(p.start, block_start + p.start - running.start, p.size) for p in running.pieces)


def choose_address(restored: Sequence[tuple[int, int]], size: int,
                   reserved: Sequence[tuple[int, int]] = ()) -> int:
    """A page-aligned start for `size` bytes free of the restored ranges and the reserved ones.

    After the last restored VMA if the block fits there below TASK_SIZE (the
    lowest such place, skipping reserved ranges), else the highest hole
    between restored VMAs that fits (top-down, as the kernel's own mmap).
    """
    if not restored:
        raise ValueError("no restored ranges")
    last_end = max(end for _, end in restored)
    holes = free_gaps([*restored, *reserved], size)
    above = [h for h in holes if h[0] >= last_end]
    if above:
        return above[0][0]
    between = [h for h in holes if h[1] <= last_end]
    if not between:
        raise VdsoError(f"no free {size:#x} bytes for the running vDSO in the restored layout")
    return between[-1][1] - size


def _elf_extent(image: bytes) -> int:
    """Bytes of the image the ELF headers describe (sections, segments, header tables)."""
    from elftools.elf.elffile import ELFFile  # tens of milliseconds to import: only a proxy needs it

    elf = ELFFile(io.BytesIO(image))
    hdr = elf.header
    ends = [hdr["e_phoff"] + hdr["e_phnum"] * hdr["e_phentsize"],
            hdr["e_shoff"] + hdr["e_shnum"] * hdr["e_shentsize"]]
    ends += [s["sh_offset"] + s["sh_size"] for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"]
    ends += [s["p_offset"] + s["p_filesz"] for s in elf.iter_segments()]
    return max(ends)


def proxy_origin(image: bytes) -> str | None:
    """The sha256 of the vDSO a revive proxy was made from, or None if image is no proxy."""
    tail = image[-MARKER_SIZE:]
    if len(image) < MARKER_SIZE or not image.startswith(ELF_MAGIC) or not tail.startswith(PROXY_MAGIC):
        return None
    return tail[len(PROXY_MAGIC):].hex()


def _mark(image: bytearray, origin: str) -> None:
    from elftools.common.exceptions import ELFError

    try:
        extent = _elf_extent(bytes(image))
    except ELFError as exc:
        raise VdsoError(f"the dumped vDSO is not a valid ELF image: {exc}") from exc
    if extent > len(image) - MARKER_SIZE:
        raise VdsoError(f"no room for the proxy marker: the ELF uses {extent:#x} of {len(image):#x} bytes")
    image[-MARKER_SIZE:] = PROXY_MAGIC + bytes.fromhex(origin)


def _base_name(name: str) -> str:
    return name[len(VDSO_PREFIX):] if name.startswith(VDSO_PREFIX) else name


def _entry_code(entry: int, target: int, room: int) -> tuple[PatchKind, bytes] | None:
    rel = target - (entry + REL32_SIZE)
    if -(1 << 31) <= rel < (1 << 31) and room >= REL32_SIZE:
        return PatchKind.REL32, b"\xe9" + struct.pack("<i", rel)
    if room >= ABS64_SIZE:
        return PatchKind.ABS64, b"\x49\xbb" + struct.pack("<Q", target) + b"\x41\xff\xe3"
    return None


def _stub_code(nr: int) -> bytes:
    return b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05\xc3"


def patch_entries(image: bytes, old_start: int, old_symbols: Sequence[VdsoSymbol],
                  new_start: int, new_symbols: Sequence[VdsoSymbol]) -> tuple[bytes, tuple[Patch, ...]]:
    """The old vDSO with every exported function turned into a jump to its new self (+ int3)."""
    new = {s.name: s for s in new_symbols}
    by_offset: dict[int, list[VdsoSymbol]] = {}
    for sym in old_symbols:
        by_offset.setdefault(sym.offset, []).append(sym)
    out = bytearray(image)
    patches = []
    for offset in sorted(by_offset):
        aliases = sorted(by_offset[offset], key=lambda s: (not s.name.startswith(VDSO_PREFIX), s.name))
        names = tuple(s.name for s in aliases)
        size = max(s.size for s in aliases)
        if size == 0:
            raise VdsoError(f"old vDSO symbol {names[0]} has no size: cannot patch it safely")
        if offset + size > len(image):
            raise VdsoError(f"old vDSO symbol {names[0]} lies outside the image")
        found = next((new[n] for n in names if n in new), None)
        if found is not None:
            code = _entry_code(old_start + offset, new_start + found.offset, size)
            if code is None:
                raise VdsoError(f"old vDSO function {names[0]} is {size} bytes: too small for a jump")
            kind, body = code
            target = new_start + found.offset
        else:
            nr = next((FALLBACK_SYSCALLS[_base_name(n)] for n in names if _base_name(n) in FALLBACK_SYSCALLS), None)
            if nr is None:
                raise VdsoError(f"the running vDSO lacks {', '.join(names)} (no syscall to stand in for it)")
            if size < SYSCALL_STUB_SIZE:
                raise VdsoError(f"old vDSO function {names[0]} is {size} bytes: too small for a stub")
            kind, body, target = PatchKind.SYSCALL, _stub_code(nr), nr
        out[offset:offset + size] = body + INT3 * (size - len(body))
        patches.append(Patch(names, offset, size, kind, target))
    return bytes(out), tuple(patches)


def plan_proxy(dumped: VdsoInfo, dumped_image: bytes, running: RunningVdso,
               restored: Sequence[tuple[int, int]], reserved: Sequence[tuple[int, int]] = ()) -> ProxyPlan:
    """Where the running vDSO block goes and the patched old vDSO that jumps into it.

    restored: the ranges the restored process will map, the old vDSO's own
    range among them; reserved: ranges that must stay free while the
    restorer runs (its own area, its temporary spots).
    """
    if len(dumped_image) != dumped.vdso_size:
        raise VdsoError(f"dumped vDSO image is {len(dumped_image)} bytes, expected {dumped.vdso_size}")
    block = choose_address(restored, running.size, reserved)
    new_vdso_start = block + running.vdso_offset
    image, patches = patch_entries(dumped_image, dumped.vdso_start, dumped.symbols,
                                   new_vdso_start, running.vdso.symbols)
    marked = bytearray(image)
    _mark(marked, proxy_origin(dumped_image) or hashlib.sha256(dumped_image).hexdigest())
    return ProxyPlan(dumped.vdso_start, bytes(marked), new_vdso_start, _block_moves(running, block), patches)


def plan_restore(process: Process, dumped_image: bytes, mode: VdsoMode, restored: Sequence[tuple[int, int]],
                 running: RunningVdso | None = None) -> VdsoPlan:
    """Decide, and plan the moves (and the proxy) for restoring process on this kernel.

    restored: every range of the target layout (its vDSO and vvar ranges
    included) plus whatever else must stay clear of the running vDSO block.
    """
    dumped = process.vdso
    running = running or read_running_vdso()
    decision = decide(dumped, running, mode)
    if decision.path is VdsoPath.REMAP:
        return VdsoPlan(decision, running, plan_remap(dumped, running))
    proxy = plan_proxy(dumped, dumped_image, running, restored)
    _check_threads_outside(process, proxy)
    return VdsoPlan(decision, running, proxy.moves, proxy)


def _check_threads_outside(process: Process, proxy: ProxyPlan) -> None:
    """A thread stopped inside an old vDSO function (not at its entry) would resume in int3."""
    for thread in process.threads:
        offset = thread.regs.rip - proxy.old_start
        for patch in proxy.patches:
            if patch.offset < offset < patch.offset + patch.size:
                where = f"{patch.names[0]} (+{offset - patch.offset:#x})"
                raise RestoreError(thread.tid, f"stopped inside the old vDSO's {where}: a proxy cannot resume it; "
                                               "restore on the dumping kernel (--vdso=remap)")


def find_proxy(pid: int, mappings: Sequence[Mapping]) -> Mapping | None:
    """The anonymous r-x mapping of pid holding a revive vDSO proxy, if there is one.

    A proxy is an ordinary private anonymous mapping to the kernel (it is not
    the [vdso] special mapping), so only its content tells: ELF magic at the
    start and the marker at the end. pid must be stopped.
    """
    for m in mappings:
        if m.perms != "r-xp" or m.inode != 0 or m.name or m.end - m.start < PAGE_SIZE:
            continue
        head = read_memory(pid, m.start, len(ELF_MAGIC))
        tail = read_memory(pid, m.end - MARKER_SIZE, MARKER_SIZE)
        if head == ELF_MAGIC and tail.startswith(PROXY_MAGIC):
            return m
    return None
