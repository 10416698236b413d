"""The live demo: a running program is dumped, killed, restored, and continues.

It drives the real command line (`python -m runtime dump|show|restore`) on a
real two-threaded `python3` process that prints a growing sequence into a file, and then
checks the sequence after restore continues with no gap and no repeat.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from runtime.kernel.clone import become_subreaper

# The counting happens in a second thread while the main one waits: the dump takes both.
COUNTER_PROGRAM = """
import threading, time
def count():
    i = 0
    while True:
        print(i, flush=True)
        i += 1
        time.sleep(0.1)
threading.Thread(target=count, name="counter").start()
threading.Event().wait()
"""

console = Console()


def runtime(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "runtime", *args]
    console.print(f"[bold]$ {' '.join(command[1:])}[/bold]")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.stdout.strip():
        console.print(result.stdout.rstrip(), markup=False, highlight=False)
    if result.returncode != 0:
        console.print(f"[red]failed ({result.returncode}): {result.stderr.strip()}[/red]")
        raise SystemExit(1)
    return result


def numbers(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()]


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    os.chdir(repo)
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="revive-demo-") as tmp:
        log = Path(tmp) / "counter.log"
        images = Path(tmp) / "images"
        with open(log, "w") as out:
            target = subprocess.Popen(
                [sys.executable, "-c", COUNTER_PROGRAM],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        pid = target.pid
        time.sleep(1.0)
        before = numbers(log)
        threads = len(os.listdir(f"/proc/{pid}/task"))
        console.print(f"target pid {pid} ({threads} threads) is counting: ... {before[-3:]}")

        runtime("dump", "-t", str(pid), "-D", str(images))
        target.wait()  # the dump killed it; reap it so its pid is free again
        dumped = numbers(log)
        console.print(f"dumped and killed; last number written: {dumped[-1]}")
        time.sleep(0.5)
        if numbers(log) != dumped:
            console.print("[red]the log moved while the target was dead[/red]")
            return 1

        runtime("show", str(images))
        runtime("restore", "-D", str(images), "-d")
        try:
            time.sleep(1.0)
            after = numbers(log)
            threads = len(os.listdir(f"/proc/{pid}/task"))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        resumed = after[len(dumped):]
        console.print(f"restored pid {pid} ({threads} threads) continued: {resumed[:5]} ...")
        if not resumed or after != list(range(len(after))):
            console.print("[red]the sequence did not continue without gap or repeat[/red]")
            return 1
        console.print(f"[green]ok: {len(resumed)} more numbers, none missing, none repeated[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
