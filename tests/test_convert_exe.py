"""`exe`: an image written as an ELF executable that resumes the process when run, as an unprivileged user."""

import contextlib
import ctypes
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from dump_support import target_path
from restore_support import Restorable, lines, run_cli, wait_for
from runtime.convert.exe import PLACE_LIMIT
from runtime.images.cpu import current_xsave_features
from runtime.images.loader import load
from runtime.images.model import VmaKind
from runtime.infect import blobs

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def public_dir():
    """A directory user 65534 can enter and run files from (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="revive-exe-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def dumped_counter(tmp_path):
    proc = Restorable([str(target_path("exe_counter"))], tmp_path)
    wait_for(lambda: len(lines(proc.out, "counter")) >= 3, what="three counts")
    proc.dump()
    yield proc
    proc.stop()


class Run:
    """The executable started from a shell-like parent as user 65534, its stdout a file; stop() kills and reaps.

    become: a preexec_fn that makes the child user 65534 itself (instead of setpriv); wrap: argv that runs the
    executable (its path last)."""

    def __init__(self, exe: Path, out: Path, become=None, wrap: tuple[str, ...] = ()):
        self.out = out
        argv = [*wrap, str(exe)] if become or wrap else NOBODY + [str(exe)]
        with open(out, "w") as stdout:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                                         cwd=exe.parent, start_new_session=True, preexec_fn=become)

    def stop(self) -> None:
        """C1, pid 1 of the namespace, killed first: the kernel kills the process, C1 reaps it, P reaps C1 and dies
        of the same signal (killing P first would leave C1 to pid 1, which here reaps nothing); then P, in case it
        was alone (the fallback) or is slow; P reaped."""
        c1 = first_child(self.proc.pid)
        if c1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c1, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

    def resumed_pid(self) -> int:
        """The resumed process's PID out here: P's grandchild (P -> C1, pid 1 of its namespace -> the process)."""
        wait_for(lambda: (c1 := first_child(self.proc.pid)) and first_child(c1), what="the resumed process")
        return first_child(first_child(self.proc.pid))


def first_child(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        found = open(f"/proc/{pid}/task/{pid}/children").read().split()
        return int(found[0]) if found else None
    return None


def ns_pids(status_path: str) -> list[int]:
    """NSpid: the task's id out here, then in each nested PID namespace."""
    line = next(line for line in open(status_path) if line.startswith("NSpid:"))
    return [int(word) for word in line.split()[1:]]


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def write_exe(images: Path, exe: Path) -> None:
    done = run_cli("exe", "-D", str(images), "-o", str(exe))
    assert done.returncode == 0, done.stderr


def dumped_counter_value(proc) -> int:
    """The counter as the image holds it (the page of the global it printed the address of)."""
    address = int(proc.target.info["counter"], 16)
    with load(proc.images) as checkpoint:
        image = checkpoint.root
        run = next(r for r in image.process.page_runs if r.vaddr <= address < r.vaddr + r.size)
        return int.from_bytes(os.pread(image.pages.fileno(), 8, run.offset + address - run.vaddr), "little")


def test_the_executable_resumes_the_counter_as_nobody_under_its_dumped_pid(dumped_counter, public_dir, runs):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    dumped = dumped_counter_value(dumped_counter)
    with load(dumped_counter.images) as checkpoint:
        brk = checkpoint.root.process.mm.brk
    run = Run(exe, public_dir / "out.txt")
    runs.append(run)
    wait_for(lambda: len(lines(run.out, "counter")) >= 5, what="five counts after resume")
    # getpid() inside is the dumped PID, its parent pid 1 of its namespace; out here it has a new one.
    resumed = lines(run.out, "resumed")
    assert resumed == [["resumed", f"pid={dumped_counter.pid}", "ppid=1", f"sbrk={brk:#x}"]], run.out.read_text()
    outer = run.resumed_pid()
    assert outer not in (dumped_counter.pid, run.proc.pid)
    assert ns_pids(f"/proc/{outer}/status") == [outer, dumped_counter.pid]
    counts = lines(run.out, "counter")
    values = [int(c[1]) for c in counts]
    assert values[0] in (dumped, dumped + 1), (dumped, values)
    assert values == list(range(values[0], values[0] + len(values)))
    assert all(c[3] == str(dumped_counter.pid) for c in counts)
    # Memory above PLACE_LIMIT: mapped and filled by the loader, not by a PT_LOAD.
    assert "\nhigh=5eed5eed12345678\n" in run.out.read_text(), run.out.read_text()
    # 100 MiB of 1 KiB mallocs on the heap the loader gave back its dumped break.
    malloc = lines(run.out, "malloc")
    assert malloc and malloc[0][2] == "bytes=104857600", run.out.read_text()
    status = open(f"/proc/{outer}/status").read()
    assert "\nUid:\t65534\t65534\t65534\t65534\n" in status
    assert open(f"/proc/{outer}/uid_map").read().split() == ["0", "65534", "1"]  # the dumped uid 0 inside


def test_a_regular_file_is_reopened_at_its_offset(public_dir, tmp_path, runs):
    data = public_dir / "data.txt"
    data.write_text("01234" "56789" "abcdef")
    data.chmod(0o644)
    proc = Restorable([str(target_path("exe_counter")), str(data)], tmp_path)
    try:
        wait_for(lambda: len(lines(proc.out, "counter")) >= 2, what="two counts")
        proc.dump()
    finally:
        proc.stop()
    with load(proc.images) as checkpoint:
        (slot,) = [s for s in checkpoint.root.process.fds if s.fd > 2]
    exe = public_dir / "counter"
    write_exe(proc.images, exe)
    run = Run(exe, public_dir / "out.txt")
    runs.append(run)
    wait_for(lambda: lines(run.out, "malloc"), what="the resume")
    assert lines(run.out, "file") == [["file", f"fd={slot.fd}", "read=56789"]], run.out.read_text()


def test_two_copies_run_at_once_each_on_its_own(dumped_counter, public_dir, runs):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    first, second = Run(exe, public_dir / "one.txt"), Run(exe, public_dir / "two.txt")
    runs += [first, second]
    for run in (first, second):
        wait_for(lambda: len(lines(run.out, "counter")) >= 10, what="ten counts in each copy")
    starts = []
    for run in (first, second):
        counts = lines(run.out, "counter")
        assert all(c[3] == str(dumped_counter.pid) for c in counts)  # each in its own PID namespace
        values = [int(c[1]) for c in counts]
        assert values == list(range(values[0], values[0] + len(values)))
        starts.append(values[0])
    assert starts[0] == starts[1]
    assert first.resumed_pid() != second.resumed_pid()


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 7), (signal.SIGUSR2, -signal.SIGUSR2)])
def test_a_signal_sent_to_the_shells_child_reaches_the_process_and_the_shell_gets_its_status(
        dumped_counter, public_dir, runs, sig, status):
    # SIGTERM: its handler prints and exits 7; SIGUSR2 (no handler) kills it, and P dies of it too.
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    run = Run(exe, public_dir / "out.txt")
    runs.append(run)
    wait_for(lambda: lines(run.out, "malloc"), what="the resume")
    outer = run.resumed_pid()
    run.proc.send_signal(sig)
    assert run.proc.wait(timeout=10) == status
    terms = lines(run.out, "term")
    assert terms == ([["term", f"pid={dumped_counter.pid}"]] if sig == signal.SIGTERM else []), run.out.read_text()
    assert not os.path.exists(f"/proc/{outer}")  # reaped by C1, its namespace's init, which P reaped
    assert run.proc.stderr.read() == b""


class Terminal:
    """A shell on a pseudo-terminal (pty.fork), as a user runs FILE: output read as it comes, keys typed."""

    def __init__(self, script: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp("bash", ["bash", "-c", script])
        self.output = b""

    def wait_for(self, text: bytes, after: int = 0) -> None:
        def seen() -> bool:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.fd, 65536)
            return text in self.output[after:]
        wait_for(seen, what=f"{text!r} on the terminal")

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def close(self) -> None:
        """The shell's job (P, whose C1 is killed first, as Run.stop does) ended while the shell is there to reap
        it, then the shell killed and reaped, unless a test reaped it (pid 0)."""
        job = first_child(self.pid) if self.pid else None
        c1 = first_child(job) if job else None
        if c1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c1, signal.SIGKILL)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not os.path.exists(f"/proc/{job}"), what="the job's end")
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def state(pid: int) -> str:
    return next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("State:"))


def test_ctrl_z_in_a_shell_stops_the_job_fg_continues_it_ctrl_c_ends_it(dumped_counter, public_dir):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    # The shell gives the job the terminal: its signals go to P, C1 and the process alike, and P sends none again.
    terminal = Terminal(f"set -m; {' '.join(NOBODY)} {exe}; echo status=$?; read go; fg; echo status=$?")
    try:
        terminal.wait_for(b"malloc ok")
        shell_child = first_child(terminal.pid)
        outer = first_child(first_child(shell_child))
        terminal.type(b"\x1a")  # Ctrl-Z: the job stops, P with SIGTSTP as a program would, and the shell says so
        terminal.wait_for(b"status=148")
        assert state(shell_child) == "T"
        wait_for(lambda: state(outer) == "T", what="the process stopped by the terminal's SIGTSTP")
        mark = len(terminal.output)
        terminal.type(b"\n")  # fg: the shell's SIGCONT to the job
        terminal.wait_for(b"counter", after=mark)
        assert state(outer) in "SR"
        terminal.type(b"\x03")  # Ctrl-C: the process dies of SIGINT (once: P does not send it again)...
        _, status = os.waitpid(terminal.pid, 0)
        terminal.pid = 0
        # ... and so does P; a script whose foreground job died of SIGINT stops there, with 128 + SIGINT.
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGINT, status
        assert b"status=" not in terminal.output[mark:]
        assert not os.path.exists(f"/proc/{outer}") and not os.path.exists(f"/proc/{shell_child}")
    finally:
        terminal.close()


def test_program_headers_show_the_layout_and_file_says_executable(dumped_counter, public_dir):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    with load(dumped_counter.images) as checkpoint:
        process = checkpoint.root.process
    placeable = [v for v in process.vmas if v.kind in (VmaKind.ANON, VmaKind.HEAP) and v.end <= PLACE_LIMIT]
    high = [v for v in process.vmas if v.kind is VmaKind.ANON and v.start == 0x7FF100000000]
    assert high, "the target's high mapping"
    assert any(v.kind is VmaKind.HEAP for v in placeable)
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_EXEC" and elf.header.e_machine == "EM_X86_64"
        assert not [s for s in elf.iter_segments() if s.header.p_type == "PT_INTERP"]
        loads = [s.header for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
        for v in placeable:
            covering = [h for h in loads if v.start <= h.p_vaddr < v.end]
            assert covering and covering[0].p_vaddr == v.start, hex(v.start)
            assert covering[-1].p_vaddr + covering[-1].p_memsz == v.end, hex(v.start)
            for h in covering:
                assert h.p_offset % 4096 == h.p_vaddr % 4096 or h.p_filesz == 0
        assert not [h for h in loads if h.p_vaddr >= PLACE_LIMIT]
        entry_load = next(h for h in loads if h.p_vaddr <= elf.header.e_entry < h.p_vaddr + h.p_memsz)
        assert not any(v.start < entry_load.p_vaddr + entry_load.p_memsz and entry_load.p_vaddr < v.end
                       for v in process.vmas)
    readelf = subprocess.run(["readelf", "-lW", str(exe)], capture_output=True, text=True, check=True).stdout
    assert readelf.count("LOAD") == len(loads)
    assert f"{process.vmas[0].start:#018x}" in readelf or any(f"{v.start:#018x}" in readelf for v in placeable)
    described = subprocess.run(["file", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "ELF 64-bit LSB executable" in described


def test_a_flipped_byte_is_refused_with_one_line(dumped_counter, public_dir):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    with open(exe, "r+b") as f:
        elf = ELFFile(f)
        heap = next(s.header for s in elf.iter_segments() if s.header.p_type == "PT_LOAD" and s.header.p_filesz)
        f.seek(heap.p_offset + 100)
        byte = f.read(1)
        f.seek(heap.p_offset + 100)
        f.write(bytes([byte[0] ^ 0x40]))
    done = subprocess.run(NOBODY + [str(exe)], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "corrupt" in done.stderr, done.stderr


def patch_and_reseal(exe: Path, offset: int, data: bytes) -> None:
    """Write data at offset and put a right checksum back, as a file made for another machine would be."""
    body = bytearray(exe.read_bytes())
    body[offset:offset + len(data)] = data
    body[-4:] = zlib.crc32(bytes(body[:-4])).to_bytes(4, "little")
    exe.write_bytes(bytes(body))


def loader_args_offset(exe: Path) -> int:
    """Where the loader_args block lies in the file: the entry's PT_LOAD, at the address the blob's word holds."""
    blob = blobs.load("loader")
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        seg = next(s.header for s in elf.iter_segments()
                   if s.header.p_type == "PT_LOAD" and s.header.p_vaddr == elf.header.e_entry)
        f.seek(seg.p_offset + blob.exports["loader_args"])
        address = int.from_bytes(f.read(8), "little")
    return seg.p_offset + address - seg.p_vaddr


def test_a_cpu_without_an_xsave_feature_the_process_used_is_refused(dumped_counter, public_dir):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    missing = next(bit for bit in range(64) if not current_xsave_features() >> bit & 1)
    field = blobs.protocol().LoaderArgs.xfeatures.offset
    xfeatures = int.from_bytes(exe.read_bytes()[loader_args_offset(exe) + field:][:8], "little")
    assert xfeatures & 0b111 == 0b111  # x87, SSE and AVX: the target is built for x86-64-v4
    patch_and_reseal(exe, loader_args_offset(exe) + field, (xfeatures | 1 << missing).to_bytes(8, "little"))
    done = subprocess.run(NOBODY + [str(exe)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "lacks xsave features" in done.stderr, done.stderr
    assert f"detail {1 << missing:#x}" in done.stderr, done.stderr


def test_a_mapped_file_changed_or_missing_is_refused_naming_it(public_dir, tmp_path, runs):
    # The target runs from a copy of its binary, which the executable maps by path.
    binary = public_dir / "exe_counter"
    shutil.copy(target_path("exe_counter"), binary)
    proc = Restorable([str(binary)], tmp_path)
    try:
        wait_for(lambda: len(lines(proc.out, "counter")) >= 2, what="two counts")
        proc.dump()
    finally:
        proc.stop()
    exe = public_dir / "counter"
    write_exe(proc.images, exe)
    run = Run(exe, public_dir / "same.txt")  # the same file: it starts
    runs.append(run)
    wait_for(lambda: lines(run.out, "resumed"), what="the resume with the binary unchanged")
    body = bytearray(binary.read_bytes())
    body[0x1000] ^= 0xFF  # same size, one byte of the code it maps changed
    binary.write_bytes(bytes(body))
    done = subprocess.run(NOBODY + [str(exe)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"{binary}: changed since the dump" in done.stderr, done.stderr
    binary.unlink()
    done = subprocess.run(NOBODY + [str(exe)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"{binary}: cannot open it" in done.stderr and "missing" in done.stderr, done.stderr


def test_a_process_the_executable_cannot_carry_is_refused_before_anything_is_written(tmp_path):
    # Its timer b signals one thread by TID, and the executable gives every thread a new one.
    proc = Restorable([str(target_path("posix_timers"))], tmp_path)
    try:
        proc.dump(leave_running=True)
        exe = tmp_path / "exe"
        done = run_cli("exe", "-D", str(proc.images), "-o", str(exe))
        assert done.returncode == 1
        assert f"POSIX timer {proc.target.info['b']} signals thread" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert not exe.exists()
    finally:
        proc.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


@pytest.fixture
def dumped_threads(tmp_path):
    proc = Restorable([str(target_path("exe_threads"))], tmp_path)
    wait_for(lambda: lines(proc.out, "worker") and len(lines(proc.out, "tick")) >= 4, what="both threads ticking")
    proc.dump()
    yield proc
    proc.stop()


def resumed_threads(proc, public_dir: Path, runs: list) -> Run:
    exe = public_dir / "threads"
    write_exe(proc.images, exe)
    run = Run(exe, public_dir / "out.txt")
    runs.append(run)
    wait_for(lambda: lines(run.out, "unlock") and len(lines(run.out, "tick")) >= 10, what="the resumed threads")
    return run


def test_threads_resume_under_their_dumped_tids_and_pthread_kill_reaches_the_other(dumped_threads, public_dir,
                                                                                  runs):
    run = resumed_threads(dumped_threads, public_dir, runs)
    with load(dumped_threads.images) as checkpoint:
        dumped = [t.tid for t in checkpoint.root.process.threads]
    before, after = lines(dumped_threads.out, "worker"), lines(run.out, "worker")
    assert after == before and int(after[0][1].split("=")[1]) in dumped[1:], (before, after)
    tid = int(after[0][1].split("=")[1])
    # Out here every thread has a new id, and NSpid pairs it with the dumped one.
    outer = run.resumed_pid()
    pairs = sorted(ns_pids(f"/proc/{outer}/task/{task}/status") for task in os.listdir(f"/proc/{outer}/task"))
    assert sorted(inner for _, inner in pairs) == sorted(dumped)
    assert not set(out for out, _ in pairs) & set(dumped)
    # glibc's cached TID is the dumped one, which is right: pthread_kill aims at the worker, the handler runs there.
    assert lines(run.out, "kill") == [["kill", "rc=0"]], run.out.read_text()
    assert lines(run.out, "handler") == [["handler", f"tid={tid}"]], run.out.read_text()
    ticks = lines(run.out, "tick")
    assert {t[1] for t in ticks} == {"main", "worker"}


def test_an_error_checking_mutex_locked_before_the_dump_is_unlocked_after(dumped_threads, public_dir, runs):
    # The mutex's __owner holds the worker's dumped TID, and so does the TID glibc caches in its namespace.
    run = resumed_threads(dumped_threads, public_dir, runs)
    assert lines(run.out, "unlock") == [["unlock", "rc=0"]]
    run.stop()
    assert run.proc.stderr.read() == b""


# A user namespace where no more user namespaces may be made (max_user_namespaces 0, which its root may set):
# unshare fails with ENOSPC, as on a machine that allows none, and the executable resumes as it did before.
NO_NAMESPACES = ("unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0"')


def test_without_namespaces_threads_resume_under_new_tids_and_say_so(dumped_threads, public_dir, runs):
    exe = public_dir / "threads"
    write_exe(dumped_threads.images, exe)
    run = Run(exe, public_dir / "out.txt", wrap=(*NOBODY, *NO_NAMESPACES))
    runs.append(run)
    wait_for(lambda: lines(run.out, "unlock") and len(lines(run.out, "tick")) >= 10, what="the resumed threads")
    with load(dumped_threads.images) as checkpoint:
        dumped = [t.tid for t in checkpoint.root.process.threads]
    (worker,) = lines(run.out, "worker")
    tid = int(worker[1].split("=")[1])
    assert tid not in dumped and os.path.exists(f"/proc/{run.proc.pid}/task/{tid}")
    assert first_child(run.proc.pid) is None  # no C1: P is the process
    # The TID glibc caches is rewritten to the new one: pthread_kill still reaches the worker...
    assert lines(run.out, "kill") == [["kill", "rc=0"]], run.out.read_text()
    assert lines(run.out, "handler") == [["handler", f"tid={tid}"]], run.out.read_text()
    # ... but the mutex's owner is the old TID: unlock is refused (EPERM), as the line on stderr warns.
    assert lines(run.out, "unlock") == [["unlock", "rc=1"]], run.out.read_text()
    run.stop()
    err = run.proc.stderr.read().decode()
    assert err.count("\n") == 1 and "no PID namespace here (errno 28)" in err, err


def test_without_namespaces_a_single_threaded_process_resumes_under_a_new_pid_silently(dumped_counter, public_dir,
                                                                                        runs):
    exe = public_dir / "counter"
    write_exe(dumped_counter.images, exe)
    run = Run(exe, public_dir / "out.txt", wrap=(*NOBODY, *NO_NAMESPACES))
    runs.append(run)
    wait_for(lambda: lines(run.out, "malloc") and len(lines(run.out, "counter")) >= 3, what="the resume")
    (resumed,) = lines(run.out, "resumed")
    assert resumed[1] == f"pid={run.proc.pid}" and run.proc.pid != dumped_counter.pid, resumed
    run.stop()
    assert run.proc.stderr.read() == b""


PYTHON_PROGRAM = """
import os, time
parent = os.getppid()
n = 0
print("ready pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.02)
    if os.getppid() != parent:
        parent = os.getppid()
        import decimal, json
        print("resumed", json.dumps({"pid": os.getpid(), "seventh": str(decimal.Decimal(1) / 7)}), flush=True)
    n += 1
    print("count", n, flush=True)
"""


def test_python3_resumes_and_imports_modules(tmp_path, public_dir, runs):
    script = tmp_path / "count.py"
    script.write_text(PYTHON_PROGRAM)
    proc = Restorable(["/usr/bin/python3", str(script)], tmp_path)
    try:
        wait_for(lambda: len(lines(proc.out, "count")) >= 3, what="three counts")
        proc.dump()
    finally:
        proc.stop()
    last = int(lines(proc.out, "count")[-1][1])
    exe = public_dir / "python"
    write_exe(proc.images, exe)
    run = Run(exe, public_dir / "out.txt")
    runs.append(run)
    wait_for(lambda: len(lines(run.out, "count")) >= 3, what="three counts after resume")
    resumed = lines(run.out, "resumed")
    # json (pure Python) and decimal (a C extension: a new file mapping) imported after the resume.
    assert resumed == [["resumed", '{"pid":', f"{proc.pid},", '"seventh":', '"0.1428571428571428571428571429"}']]
    values = [int(c[1]) for c in lines(run.out, "count")]
    assert values[0] in (last, last + 1) and values == list(range(values[0], values[0] + len(values)))


LIBRARIES = "/usr/lib/x86_64-linux-gnu"


def hidden_files_then_nobody(hidden: list[str]):
    """For Popen's preexec_fn: a mount namespace where each hidden directory is an empty tmpfs, then uid 65534.
    Python and setpriv need the libraries themselves, so this runs in the forked child before its exec."""
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        if libc.unshare(CLONE_NEWNS) or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None):
            raise OSError(ctypes.get_errno(), "unshare/mount")
        for path in hidden:
            if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, None):
                raise OSError(ctypes.get_errno(), f"mount tmpfs on {path}")
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    return enter


CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 1 << 18


def test_standalone_runs_with_the_libraries_and_program_hidden(public_dir, tmp_path, runs):
    bin_dir = public_dir / "bin"
    bin_dir.mkdir(mode=0o755)
    binary = bin_dir / "exe_counter"
    shutil.copy(target_path("exe_counter"), binary)
    proc = Restorable([str(binary)], tmp_path)
    try:
        wait_for(lambda: len(lines(proc.out, "counter")) >= 2, what="two counts")
        proc.dump()
    finally:
        proc.stop()
    with load(proc.images) as checkpoint:
        mapped = {v.path for v in checkpoint.root.process.vmas if v.kind is VmaKind.FILE}
    assert str(binary) in mapped and any(path.startswith(LIBRARIES) for path in mapped), mapped
    standalone, by_path = public_dir / "standalone", public_dir / "by-path"
    done = run_cli("exe", "-D", str(proc.images), "-o", str(standalone), "--standalone")
    assert done.returncode == 0, done.stderr
    write_exe(proc.images, by_path)
    hide = hidden_files_then_nobody([LIBRARIES, str(bin_dir)])

    run = Run(standalone, public_dir / "out.txt", become=hide)
    runs.append(run)
    wait_for(lambda: lines(run.out, "malloc") and len(lines(run.out, "counter")) >= 3, what="the standalone resume")
    assert lines(run.out, "resumed")[0][1] == f"pid={proc.pid}"
    maps = open(f"/proc/{run.resumed_pid()}/maps").read()
    assert LIBRARIES not in maps and str(binary) not in maps

    refused = subprocess.run([str(by_path)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                             cwd=public_dir, preexec_fn=hide)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "cannot open it" in refused.stderr and "missing" in refused.stderr, refused.stderr
