"""The ELF64 structures the converters write (x86_64, little-endian), declared once.

Why hand-declared with struct: the converters only write a file header,
program headers and notes, byte for byte as the kernel's ELF loader and
gdb read them (include/uapi/linux/elf.h); pyelftools and LIEF read and edit
ELF files but build neither a core file nor a loader-ready executable
from raw parts. The tests read what is written back with pyelftools.
"""

import struct

PAGE_SIZE = 4096

ET_EXEC, ET_CORE = 2, 4
EM_X86_64 = 62
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4

# Elf64_Ehdr: e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
# e_phnum, e_shentsize, e_shnum, e_shstrndx.
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
PHDR = struct.Struct("<IIQQQQQQ")
# Elf64_Nhdr: n_namesz, n_descsz, n_type; the name and the descriptor follow, each padded to 4 bytes.
NHDR = struct.Struct("<III")

_IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE


def file_header(e_type: int, entry: int, phnum: int) -> bytes:
    """The ELF header, program headers right after it, no section headers."""
    return EHDR.pack(_IDENT, e_type, EM_X86_64, 1, entry, EHDR.size, 0, 0, EHDR.size, PHDR.size, phnum, 0, 0, 0)


def program_header(p_type: int, flags: int, offset: int, vaddr: int, filesz: int, memsz: int,
                   align: int = PAGE_SIZE) -> bytes:
    return PHDR.pack(p_type, flags, offset, vaddr, 0, filesz, memsz, align)


def prot_flags(prot: int) -> int:
    """PROT_READ|WRITE|EXEC (1, 2, 4) as p_flags (PF_R 4, PF_W 2, PF_X 1)."""
    return (PF_R if prot & 1 else 0) | (PF_W if prot & 2 else 0) | (PF_X if prot & 4 else 0)


def note(name: bytes, n_type: int, desc: bytes) -> bytes:
    """One note: its header, its NUL-terminated name and its descriptor, each padded to 4 bytes."""
    name += b"\0"
    return NHDR.pack(len(name), len(desc), n_type) + _pad4(name) + _pad4(desc)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)
