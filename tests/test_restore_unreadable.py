"""Memory only the dump can reach: pages the process cannot read, and the pages of a file deleted since it was mapped.

The parasite moves pages by vmsplice, which reads as the process does; such
pages are read through /proc/PID/mem instead, which may (FOLL_FORCE), and the
restorer writes them before it sets the mapping's protection. A file mapped
privately and then deleted is made again (deleted) for the pages that are
still its (a SysV segment, which also shows as deleted, is no such file: tests/test_restore_sysv_shm.py).
"""

from restore_support import lines, wait_for
from tree_support import start_tree, subreaper

PYTHON = "/usr/bin/python3"
PROGRAM = """
import ctypes, mmap, os, time
libc = ctypes.CDLL(None, use_errno=True)
size = 3 * mmap.PAGESIZE
area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
area[:] = bytes(range(256)) * (size // 256)
address = ctypes.addressof(ctypes.c_char.from_buffer(area))
assert libc.mprotect(ctypes.c_void_p(address), size, 0) == 0  # PROT_NONE
os.write(1, f"ready pid={os.getpid()} address={address:#x}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
assert libc.mprotect(ctypes.c_void_p(address), size, mmap.PROT_READ) == 0
data = ctypes.string_at(address, size)
os.write(1, f"data {data == bytes(range(256)) * (size // 256)}\\n".encode())
time.sleep(1000)
"""


def test_a_prot_none_region_holding_data_comes_back_with_it(tmp_path):
    with subreaper():
        tree = start_tree([PYTHON, "-c", PROGRAM], tmp_path)
        try:
            address = int(tree.info["address"], 16)
            with open(f"/proc/{tree.root}/maps") as f:
                assert any(line.startswith(f"{address:x}-") and line.split()[1] == "---p" for line in f)
            tree.dump()
            tree.restore()
            (tmp_path / "go").touch()
            wait_for(lambda: lines(tree.out, "data"), what="the restored data")
            assert lines(tree.out, "data") == [["data", "True"]]
        finally:
            tree.stop()


PRIVATE_DELETED = """
import mmap, os, time
with open("backing", "wb") as f:
    f.write(b"A" * mmap.PAGESIZE + b"B" * mmap.PAGESIZE)
fd = os.open("backing", os.O_RDWR)
area = mmap.mmap(fd, 2 * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
os.close(fd)
area[:5] = b"COPY!"  # this page is the process's own now; the other is still the file's
os.unlink("backing")
os.write(1, f"ready pid={os.getpid()}\\n".encode())
while not os.path.exists("go"):
    time.sleep(0.01)
os.write(1, f"data {area[:6]!r} {area[mmap.PAGESIZE:mmap.PAGESIZE + 2]!r}\\n".encode())
time.sleep(1000)
"""


def test_a_private_mapping_of_a_deleted_file_keeps_the_files_pages_and_its_own(tmp_path):
    """The file comes back (deleted again) for the pages still its own; the page the process wrote is its copy."""
    with subreaper():
        tree = start_tree([PYTHON, "-c", PRIVATE_DELETED], tmp_path)
        try:
            tree.dump()
            tree.restore()
            with open(f"/proc/{tree.root}/maps") as f:
                assert any(line.rstrip().endswith(f"{tmp_path}/backing (deleted)") for line in f)
            (tmp_path / "go").touch()
            wait_for(lambda: lines(tree.out, "data"), what="the data")
            assert lines(tree.out, "data") == [["data", "b'COPY!A'", "b'BB'"]]
        finally:
            tree.stop()

