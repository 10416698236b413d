"""Dumps of real targets with --leave-running, the images checked against what the targets set up."""

import os
import resource
import signal
import struct
import time

import pytest

from dump_support import start_target, target_path
from runtime.arch import x86_64 as arch
from runtime.dump import DumpOptions, dump
from runtime.images.loader import load
from runtime.images.model import TASK_SIZE, FdKind, RseqCase, VmaKind
from runtime.kernel.procfs.status import read_status

PAGE = 4096
LEAVE_RUNNING = DumpOptions(leave_running=True)

XMM_OFFSET = 160  # xmm0 in the legacy fxsave area


def pattern_word(page, j):
    return 0xA5A5000000000000 | page << 20 | j


def file_word(page, j):
    return 0xF11E000000000000 | page << 20 | j


def read_words(data, count):
    return struct.unpack(f"<{count}Q", data[:count * 8])


class PagesImage:
    """A loaded image with its pages file, readable by virtual address."""

    def __init__(self, directory):
        self.checkpoint = load(directory)
        self.process = self.checkpoint.root.process
        self.pages = self.checkpoint.root.pages_path.read_bytes()

    def saved_pages(self, start, end):
        return {run.vaddr + i * PAGE for run in self.process.page_runs for i in range(run.nr_pages)
                if start <= run.vaddr + i * PAGE < end}

    def page(self, vaddr):
        for run in self.process.page_runs:
            if run.vaddr <= vaddr < run.vaddr + run.size:
                offset = run.offset + (vaddr - run.vaddr) // PAGE * PAGE
                return self.pages[offset:offset + PAGE]
        raise KeyError(hex(vaddr))

    def vma_at(self, addr):
        return next(v for v in self.process.vmas if v.start <= addr < v.end)


def assert_running_untraced(target):
    assert target.alive()
    st = read_status(target.pid)
    assert st.tracer_pid == 0 and st.state in ("S", "R")


def read_counter(target):
    with open(f"/proc/{target.pid}/mem", "rb") as mem:
        mem.seek(target.addr("counter"))
        return struct.unpack("<Q", mem.read(8))[0]


@pytest.fixture
def dump_state_target(tmp_path):
    target = start_target([str(target_path("dump_state")), str(tmp_path / "state-file")], tmp_path)
    yield target
    target.stop()


def test_dump_saves_only_written_anonymous_pages_with_their_content(pages_target, tmp_path):
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    image = PagesImage(tmp_path / "img")
    anon = pages_target.addr("anon")
    written = {anon + i * PAGE for i in range(64) if i % 3 != 2}
    # Untouched pages and pages that only read the shared zero page are not saved.
    assert image.saved_pages(anon, anon + 64 * PAGE) == written
    for vaddr in sorted(written):
        i = (vaddr - anon) // PAGE
        assert read_words(image.page(vaddr), 512) == tuple(pattern_word(i, j) for j in range(512))


def test_dump_saves_copied_pages_of_a_private_file_mapping_only(pages_target, tmp_path):
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    image = PagesImage(tmp_path / "img")
    file = pages_target.addr("file")
    vma = image.vma_at(file)
    assert (vma.kind, vma.path, vma.offset, vma.shared) == (VmaKind.FILE, str(tmp_path / "backing"), 0, False)
    assert image.saved_pages(file, file + 8 * PAGE) == {file + 2 * PAGE, file + 5 * PAGE}
    page2 = read_words(image.page(file + 2 * PAGE), 512)
    assert page2[0] == 0xC0C0C0C0 and page2[1:] == tuple(file_word(2, j) for j in range(1, 512))
    page5 = read_words(image.page(file + 5 * PAGE), 512)
    assert page5[7] == 0xC0C0C0C5 and page5[6] == file_word(5, 6)


def test_dump_records_special_mappings_and_shared_memory(pages_target, tmp_path):
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    image = PagesImage(tmp_path / "img")
    none, gd, shanon = (pages_target.addr(k) for k in ("none", "gd", "shanon"))
    assert image.vma_at(none).prot == 0 and not image.saved_pages(none, none + 4 * PAGE)
    assert image.vma_at(gd).growsdown and image.saved_pages(gd, gd + 4 * PAGE) == {gd + 3 * PAGE}
    assert image.page(gd + 3 * PAGE)[-1] == 0x6D
    # Shared anonymous memory is its object's, saved once in shmem-ID.img, not among the process's pages.
    vma = image.vma_at(shanon)
    assert vma.shared and vma.shmem is not None and not image.saved_pages(vma.start, vma.end)
    (obj,) = image.checkpoint.tree.shared_memory
    data = (tmp_path / "img" / f"shmem-{obj.id}.img").read_bytes()
    assert obj.id == vma.shmem and obj.size == vma.size and obj.extents[0].start == 0
    assert data[0] == 0x51 and data[PAGE] == 0x52
    kinds = {v.kind for v in image.process.vmas}
    assert {VmaKind.HEAP, VmaKind.STACK, VmaKind.VDSO, VmaKind.VVAR} <= kinds
    assert all(v.end <= TASK_SIZE for v in image.process.vmas)  # no [vsyscall]
    vdso = image.process.vdso
    assert vdso.vdso_start == image.vma_at(vdso.vdso_start).start
    assert {"__vdso_clock_gettime", "__vdso_getcpu"} <= {s.name for s in vdso.symbols}
    assert image.checkpoint.root.vdso_path.stat().st_size == vdso.vdso_size
    for v in image.process.vmas:
        if v.kind in (VmaKind.VDSO, VmaKind.VVAR, VmaKind.VVAR_VCLOCK):
            assert not image.saved_pages(v.start, v.end)


def test_dump_leaves_the_target_running_and_counting(pages_target, tmp_path):
    before = read_counter(pages_target)
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    image = PagesImage(tmp_path / "img")
    counter = pages_target.addr("counter")
    saved = struct.unpack_from("<Q", image.page(counter & ~(PAGE - 1)), counter % PAGE)[0]
    assert before <= saved
    assert_running_untraced(pages_target)
    deadline = time.monotonic() + 5
    while read_counter(pages_target) < saved + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert read_counter(pages_target) >= saved + 3


def test_dump_records_process_facts(pages_target, tmp_path):
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    process = PagesImage(tmp_path / "img").process
    assert (process.pid, process.ppid, process.comm) == (pages_target.pid, os.getpid(), "dump_pages")
    assert (process.cwd, process.root) == (str(tmp_path), "/")
    assert process.mm.exe == str(target_path("dump_pages"))
    assert process.mm.start_brk <= process.mm.brk
    assert process.creds.uids == (os.getuid(),) * 4
    assert len(process.threads) == 1 and process.threads[0].tid == pages_target.pid
    rseq = process.threads[0].rseq
    assert rseq is not None and rseq.case is RseqCase.OUTSIDE  # glibc registers one; the target sleeps outside
    files = {entry.id: entry for entry in process.files}
    assert [(fd.fd, files[fd.file_id].kind) for fd in process.fds] == [(0, FdKind.CHR), (1, FdKind.FILE),
                                                                        (2, FdKind.FILE)]


def test_dump_records_signals_files_limits_and_timers(dump_state_target, tmp_path):
    dump(dump_state_target.pid, tmp_path / "img", LEAVE_RUNNING)
    process = PagesImage(tmp_path / "img").process
    sigrtmin = int(dump_state_target.info["sigrtmin"])
    usr1 = process.sigactions[signal.SIGUSR1 - 1]
    sa_siginfo, sa_onstack, sa_restart = 4, 0x08000000, 0x10000000
    assert usr1.handler == dump_state_target.addr("handler")
    assert usr1.flags & (sa_siginfo | sa_onstack | sa_restart) == sa_siginfo | sa_onstack | sa_restart
    assert usr1.mask == 1 << (signal.SIGTERM - 1)
    thread = process.threads[0]
    assert thread.blocked == (1 << (signal.SIGUSR2 - 1)) | (1 << (sigrtmin + 2 - 1))
    assert [struct.unpack_from("<i", info)[0] for info in thread.pending] == [signal.SIGUSR2]
    assert [struct.unpack_from("<i", info)[0] for info in process.shared_pending] == [sigrtmin + 2]
    assert struct.unpack_from("<i", process.shared_pending[0], 24)[0] == 1234  # si_value
    assert (thread.altstack.sp, thread.altstack.size) == (dump_state_target.addr("altstack"),
                                                          int(dump_state_target.info["altstack_size"]))
    assert process.umask == 0o027
    assert process.rlimits[resource.RLIMIT_NOFILE].cur == 200
    virtual = process.itimers[1]
    assert (virtual.interval_sec, virtual.interval_usec) == (100, 0) and 0 < virtual.value_sec <= 100
    files = {entry.id: entry for entry in process.files}
    fds = {fd.fd: files[fd.file_id] for fd in process.fds}
    data = fds[int(dump_state_target.info["file_fd"])]
    assert (data.kind, data.node.path, data.pos, data.flags & os.O_ACCMODE) == (FdKind.FILE,
                                                                                str(tmp_path / "state-file"), 12,
                                                                                os.O_RDWR)
    assert (fds[7].kind, fds[7].node.path, fds[7].flags & os.O_ACCMODE) == (FdKind.CHR, "/dev/null", os.O_WRONLY)
    assert_running_untraced(dump_state_target)


def test_dump_records_vector_registers_and_the_syscall_restart(dump_state_target, tmp_path):
    dump(dump_state_target.pid, tmp_path / "img", LEAVE_RUNNING)
    checkpoint = load(tmp_path / "img")
    thread = checkpoint.root.process.threads[0]
    xstate = checkpoint.root.xstate_paths[thread.tid].read_bytes()
    # Where the components sit in PTRACE_GETREGSET's standard format is CPUID's answer (the target's).
    ymm_hi128, zmm_hi256, hi16_zmm = (int(dump_state_target.info[k]) for k in ("ymm_hi128", "zmm_hi256", "hi16_zmm"))
    zmm = [bytes((i * 64 + k) & 0xFF for k in range(64)) for i in range(32)]
    for i in range(16):
        assert xstate[XMM_OFFSET + 16 * i:][:16] == zmm[i][:16]
        assert xstate[ymm_hi128 + 16 * i:][:16] == zmm[i][16:32]
        assert xstate[zmm_hi256 + 32 * i:][:32] == zmm[i][32:]
    for i in range(16, 32):
        assert xstate[hi16_zmm + 64 * (i - 16):][:64] == zmm[i]
    regs = thread.regs
    # Stopped in its raw nanosleep: saved as the restart the kernel would make, at the syscall instruction.
    assert regs.rax in (arch.NR_NANOSLEEP, arch.NR_RESTART_SYSCALL)
    assert regs.orig_rax == arch.SIGSET_ALL
    with open(f"/proc/{dump_state_target.pid}/mem", "rb") as mem:
        mem.seek(regs.rip)
        assert mem.read(2) == arch.SYSCALL_INSN
    assert_running_untraced(dump_state_target)


def test_images_have_private_modes(pages_target, tmp_path):
    dump(pages_target.pid, tmp_path / "img", LEAVE_RUNNING)
    assert (tmp_path / "img").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "img").iterdir()} == {0o600}
