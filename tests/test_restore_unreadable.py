"""Pages the process itself cannot read (PROT_NONE, write-only) but that hold data: saved and restored.

The parasite moves pages by vmsplice, which reads as the process does; such
pages are read through /proc/PID/mem instead, which may (FOLL_FORCE), and the
restorer writes them before it sets the mapping's protection.
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
