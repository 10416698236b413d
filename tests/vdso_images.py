"""Test support for the vDSO proxy: genuinely different vDSO images built from the real one.

Why build them: the proxy exists for a restore on a kernel whose vDSO is
not the dumped one, and this machine has one kernel. So the tests make a
vDSO whose layout differs from the running kernel's: the real image with
padding inserted before .text, so every function (and every symbol) moves,
with the ELF headers and the dynamic symbol table fixed to match, or with a
symbol renamed so the running vDSO lacks it. The tests write such an image
over a live target's [vdso] (through /proc/PID/mem, as a debugger plants a
breakpoint) before dumping it: the dump then really records a different
vDSO. Its code is never run: the target calls only the entry points, which
the proxy replaces with jumps. (Its .eh_frame still describes the old
offsets; nothing reads it.)
"""

import io
import struct

from elftools.elf.elffile import ELFFile

SHDR_OFFSET = 0x18  # sh_offset in Elf64_Shdr; sh_addr is at 0x10
SHDR_ADDR = 0x10
PHDR_FILESZ = 0x20
PHDR_MEMSZ = 0x28
SYM_VALUE = 8
EHDR_SHOFF = 0x28
PT_LOAD = 1


def shift_functions(image: bytes, pad: int, fill: bytes = b"\xcc") -> bytes:
    """The vDSO image with pad bytes inserted before .text: every function moves up by pad."""
    elf = ELFFile(io.BytesIO(image))
    text = elf.get_section_by_name(".text")
    cut, cut_addr = text["sh_offset"], text["sh_addr"]
    hdr = elf.header
    extent = max(hdr["e_shoff"] + hdr["e_shnum"] * hdr["e_shentsize"],
                 *(s["sh_offset"] + s["sh_size"] for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"))
    if extent + pad > len(image):
        raise ValueError(f"no room for {pad} bytes of padding in a {len(image)}-byte vDSO")
    out = bytearray(image[:cut] + fill * pad + image[cut:extent])
    out += bytes(len(image) - len(out))

    def add(at: int, fmt: str, delta: int) -> None:
        (value,) = struct.unpack_from(fmt, out, at)
        struct.pack_into(fmt, out, at, value + delta)

    shoff = hdr["e_shoff"]
    if shoff >= cut:
        add(EHDR_SHOFF, "<Q", pad)
        shoff += pad
    for i, section in enumerate(elf.iter_sections()):
        at = shoff + i * hdr["e_shentsize"]
        if section["sh_type"] != "SHT_NULL" and section["sh_offset"] >= cut:
            add(at + SHDR_OFFSET, "<Q", pad)
            if section["sh_addr"] >= cut_addr:
                add(at + SHDR_ADDR, "<Q", pad)
    for i, segment in enumerate(elf.iter_segments()):
        at = hdr["e_phoff"] + i * hdr["e_phentsize"]
        if segment["p_type"] == "PT_LOAD" and segment["p_offset"] <= cut < segment["p_offset"] + segment["p_filesz"]:
            add(at + PHDR_FILESZ, "<Q", pad)
            add(at + PHDR_MEMSZ, "<Q", pad)
    dynsym = elf.get_section_by_name(".dynsym")
    for i, sym in enumerate(dynsym.iter_symbols()):
        if sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS") and sym["st_value"] >= cut_addr:
            add(dynsym["sh_offset"] + i * dynsym["sh_entsize"] + SYM_VALUE, "<Q", pad)
    return bytes(out)


def rename_symbols(image: bytes, renames: dict[str, str]) -> bytes:
    """The vDSO image with dynamic symbols renamed in place (each new name as long as the old).

    The string table may share one string between a name and its suffix
    (getrandom inside __vdso_getrandom), so a rename can rename both.
    """
    elf = ELFFile(io.BytesIO(image))
    dynsym = elf.get_section_by_name(".dynsym")
    dynstr = elf.get_section_by_name(".dynstr")
    out = bytearray(image)
    for sym in dynsym.iter_symbols():
        new = renames.get(sym.name)
        if new is not None:
            if len(new) != len(sym.name):
                raise ValueError(f"{new} is not as long as {sym.name}")
            at = dynstr["sh_offset"] + sym["st_name"]
            out[at:at + len(new)] = new.encode()
    return bytes(out)


def write_vdso(pid: int, start: int, image: bytes) -> None:
    """Write image over the [vdso] of a live process (the kernel copies the page on write)."""
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(image)
