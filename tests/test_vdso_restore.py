"""vDSO remap and proxy end to end: real targets dumped, restored, calling their old vDSO pointers."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import capstone
import pytest

from dump_support import start_target, target_path
from runtime import dump, restore
from runtime.errors import VdsoError
from runtime.images import loader
from runtime.kernel.procfs import maps
from runtime.kernel.procfs.mem import read_memory
from runtime.kernel.procfs.vdso import parse_symbols
from runtime.mm.vdso import PROXY_MAGIC, VdsoMode, proxy_origin, read_running_vdso
from vdso_images import rename_symbols, shift_functions, write_vdso

FUNCTIONS = ("clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres")
CLOCKS = {"realtime": time.CLOCK_REALTIME, "monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME,
          "monotonic_raw": time.CLOCK_MONOTONIC_RAW}
COARSE = {"realtime_coarse": time.CLOCK_REALTIME, "monotonic_coarse": time.CLOCK_MONOTONIC}
COARSE_SLACK_NS = 20_000_000  # a coarse clock lags by up to a few ticks


class Restorable:
    """A vdso_calls target: started, dumped, restored, always killed and reaped."""

    def __init__(self, tmp_path, *argv):
        self.tmp_path = tmp_path
        self.images = tmp_path / "images"
        self.target = start_target([str(target_path("vdso_calls")), *argv], tmp_path)
        self.pid = self.target.pid
        self.seen = 1
        self.restored = False
        self.restored_elsewhere = False  # by a CLI process: its child, not ours

    def lines(self, tag):
        return [line for line in self.target.out.read_text().splitlines() if line.startswith(tag + " ")]

    def ask(self, sig, tag, timeout=5.0):
        """Send sig, return the key=value pairs of the next line tagged tag."""
        before = len(self.lines(tag))
        os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines(tag)
            if len(found) > before:
                return dict(word.split("=", 1) for word in found[before].split()[1:])
            time.sleep(0.005)
        raise AssertionError(f"no {tag} line from {self.pid}: {self.target.out.read_text()!r}")

    def dump(self):
        dump.dump(self.pid, self.images)
        self.target.proc.wait()  # killed by the dump: reap it so its PID is free again

    def restore(self, mode):
        restore.restore(str(self.images), detach=True, vdso_mode=mode)
        self.restored = True

    def redump(self, directory):
        self.images = directory
        dump.dump(self.pid, directory)
        # The dump, tracer of the process it kills, may already have reaped our restored child.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.restored = False

    def stop(self):
        if self.restored_elsewhere:
            os.kill(self.pid, signal.SIGKILL)
            while os.path.exists(f"/proc/{self.pid}"):  # init reaps it
                time.sleep(0.01)
        elif self.restored:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        else:
            self.target.stop()


@pytest.fixture
def restorable(tmp_path, request):
    argv = getattr(request, "param", ())
    proc = Restorable(tmp_path, *argv)
    yield proc
    proc.stop()


def pointers(info):
    return {name: int(info[name], 16) for name in FUNCTIONS}


def special_ranges(pid):
    names = ("[vdso]", "[vvar]", "[vvar_vclock]")
    return {m.name: (m.start, m.end) for m in maps.read_mappings(pid) if m.name in names}


def check_report(proc):
    """The restored process's calls through its old pointers give live values; getcpu follows affinity."""
    before = {name: time.clock_gettime_ns(clock) for name, clock in {**CLOCKS, **COARSE}.items()}
    wall = time.time()
    report = proc.ask(signal.SIGUSR1, "report")
    after = {name: time.clock_gettime_ns(clock) for name, clock in {**CLOCKS, **COARSE}.items()}
    for name in CLOCKS:
        assert before[name] <= int(report[name]) <= after[name], name
    for name in COARSE:
        assert before[name] - COARSE_SLACK_NS <= int(report[name]) <= after[name], name
    assert before["realtime"] // 1000 - 1 <= int(report["tod_us"]) <= after["realtime"] // 1000 + 1
    assert abs(int(report["time"]) - wall) <= 1
    assert int(report["res_ns"]) == time.clock_getres(time.CLOCK_MONOTONIC) * 1e9
    for cpu in range(min(os.cpu_count(), 2)):
        os.sched_setaffinity(proc.pid, {cpu})
        assert int(proc.ask(signal.SIGUSR1, "report")["cpu"]) == cpu


def check_proxy_in_place(proc, old_vdso, old_pointers, old_symbols):
    """The old vDSO address holds the marked copy whose entries jump into the running [vdso]."""
    running = read_running_vdso()
    new_start = special_ranges(proc.pid)["[vdso]"][0]
    assert new_start != old_vdso
    proxy = next(m for m in maps.read_mappings(proc.pid) if m.start == old_vdso)
    assert (proxy.perms, proxy.name) == ("r-xp", "")
    image = read_memory(proc.pid, proxy.start, proxy.end - proxy.start)
    assert image[-48:].startswith(PROXY_MAGIC) and proxy_origin(image) is not None
    new_offsets = {s.name: s.offset for s in running.vdso.symbols}
    old_offsets = {s.name: s.offset for s in old_symbols}
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for name, pointer in old_pointers.items():
        assert pointer == old_vdso + old_offsets[f"__vdso_{name}"]
        code = image[pointer - old_vdso:pointer - old_vdso + 16]
        insns = [(i.mnemonic, i.op_str) for i in md.disasm(code, pointer)][:3]
        target = hex(new_start + new_offsets[f"__vdso_{name}"])
        assert insns[0] in (("jmp", target), ("movabs", f"r11, {target}")), (name, insns)


def test_forced_proxy_restore_keeps_old_pointers_working(restorable):
    old = pointers(restorable.target.info)
    old_vdso = restorable.target.addr("vdso")
    restorable.dump()
    restorable.restore(VdsoMode.PROXY)
    check_proxy_in_place(restorable, old_vdso, old, read_running_vdso().vdso.symbols)
    check_report(restorable)


def test_same_vdso_is_remapped_to_its_old_address(restorable):
    old_vdso = restorable.target.addr("vdso")
    before = special_ranges(restorable.pid)
    restorable.dump()
    restorable.restore(VdsoMode.AUTO)
    assert special_ranges(restorable.pid) == before
    assert read_memory(restorable.pid, old_vdso, 8192) == read_running_vdso().vdso.image
    check_report(restorable)


def test_genuinely_different_vdso_is_proxied(restorable):
    running = read_running_vdso()
    shifted = shift_functions(running.vdso.image, 0x40)
    write_vdso(restorable.pid, restorable.target.addr("vdso"), shifted)
    resolved = restorable.ask(signal.SIGHUP, "resolved")
    old = pointers(resolved)
    assert old != pointers(restorable.target.info)  # the target now sees the shifted layout
    restorable.dump()
    assert loader.load(str(restorable.images)).root.process.vdso.sha256 != running.vdso.sha256
    restorable.restore(VdsoMode.AUTO)
    check_proxy_in_place(restorable, int(resolved["vdso"], 16), old, parse_symbols(shifted))
    check_report(restorable)


@pytest.mark.parametrize("restorable", [("top",)], indirect=True)
def test_proxy_goes_into_a_hole_when_nothing_fits_after_the_last_vma(restorable):
    restorable.dump()
    restorable.restore(VdsoMode.PROXY)
    layout = maps.read_mappings(restorable.pid)
    top = max(m.end for m in layout if m.name != "[vsyscall]")
    assert top == 0x7FFFFFFFF000
    block = special_ranges(restorable.pid)
    assert block["[vdso]"][1] <= 0x7FFFFFFFE000 and block["[vvar]"][1] == block["[vvar_vclock]"][0]
    check_report(restorable)


def test_proxied_process_dumps_and_restores_again(restorable, tmp_path):
    old = pointers(restorable.target.info)
    old_vdso = restorable.target.addr("vdso")
    restorable.dump()
    restorable.restore(VdsoMode.PROXY)
    check_report(restorable)
    restorable.redump(tmp_path / "again")
    info = loader.load(str(restorable.images)).root.process.vdso
    assert info.proxy and info.vdso_start == old_vdso
    restorable.restore(VdsoMode.AUTO)
    check_proxy_in_place(restorable, old_vdso, old, read_running_vdso().vdso.symbols)
    check_report(restorable)


def test_symbol_missing_from_the_running_vdso_refuses_the_restore(restorable):
    running = read_running_vdso()
    renamed = rename_symbols(running.vdso.image, {"__vdso_getrandom": "__vdso_getrandoX"})
    write_vdso(restorable.pid, restorable.target.addr("vdso"), renamed)
    restorable.dump()
    with pytest.raises(VdsoError, match="lacks __vdso_getrandoX"):
        restorable.restore(VdsoMode.AUTO)
    assert not os.path.exists(f"/proc/{restorable.pid}")


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "runtime", *argv], capture_output=True, text=True, timeout=60)


def test_cli_vdso_option_and_show_say_which_path(restorable):
    running = read_running_vdso()
    write_vdso(restorable.pid, restorable.target.addr("vdso"), shift_functions(running.vdso.image, 0x40))
    restorable.dump()
    shown = run_cli("show", str(restorable.images))
    assert shown.returncode == 0 and "vdso on restore here: proxy (the running vDSO differs" in shown.stdout
    refused = run_cli("restore", "-D", str(restorable.images), "-d", "--vdso=remap")
    assert refused.returncode == 1 and "--vdso=remap impossible" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not os.path.exists(f"/proc/{restorable.pid}")
    done = run_cli("restore", "-D", str(restorable.images), "-d", "--vdso=proxy")
    assert done.returncode == 0, done.stderr
    restorable.restored_elsewhere = True
    assert special_ranges(restorable.pid)["[vdso]"][0] != restorable.target.addr("vdso")
