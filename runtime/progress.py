"""The progress bar a person sees on a terminal while a dump or a restore moves its pages.

Why a thread that polls a counter: the page bytes move inside the kernel
(the dump splices the parasite's pipe into the pages image; the restorer's
preadv fills the restored memory inside the child) and never pass through
a Python loop that could count them, and a restore's parent sits in waitpid
meanwhile. The kernel counts them anyway: the pages image's size, the
restoring child's rchar (runtime/procfs/io.py; the kernel adds to it once
per preadv, so the restorer reads at most 64 MiB per call). A thread reads
that counter ten times a second; both reads are cheap (one fstat, one small
/proc read), honest (bytes that arrived) and touch neither process.

The bar is drawn on stderr, only when stderr is a terminal and only once
the transfer has lasted DELAY seconds, so short commands, pipes and log
files get nothing extra (not even rich's import, which happens then). REVIVE_PROGRESS_DELAY overrides DELAY (tests set 0
to see the bar on a transfer shorter than a second).
"""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache

from runtime.errors import ReviveError

DELAY = 1.0
DELAY_ENV = "REVIVE_PROGRESS_DELAY"
POLL_INTERVAL = 0.1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@cache
def _columns():
    """The bar's own columns, made when a bar is first drawn: rich takes tens of milliseconds to import, more
    than a whole dump of a small process, and most commands never draw a bar (no terminal, or done in time)."""
    from rich import filesize
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Bytes per second since the transfer started: one that ends between two polls still has its rate."""

        def __init__(self, started: float):
            super().__init__()
            self.started = started

        def render(self, task: Task) -> Text:
            elapsed = time.monotonic() - self.started
            if not task.completed or elapsed <= 0:
                return Text("?")
            return Text(f"{filesize.decimal(int(task.completed / elapsed))}/s")

    class PagesColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{int(task.completed) // PAGE_SIZE}/{int(task.total or 0) // PAGE_SIZE} pages")

    return RateColumn, PagesColumn


@contextlib.contextmanager
def watch(label: str, total: int, done: Callable[[], int]) -> Iterator[None]:
    """While the body runs, show on a terminal how many of total bytes done() says have moved."""
    if total <= 0 or not sys.stderr.isatty():
        yield
        return
    finished = threading.Event()
    drawer = threading.Thread(target=_draw, args=(label, total, done, _delay(), finished, time.monotonic()),
                              name="revive-progress", daemon=True)
    drawer.start()
    try:
        yield
    finally:
        finished.set()
        drawer.join()


def _delay() -> float:
    text = os.environ.get(DELAY_ENV)
    if text is None:
        return DELAY
    try:
        return float(text)
    except ValueError:
        raise ReviveError(f"{DELAY_ENV}={text!r}: not a number of seconds") from None


def _draw(label: str, total: int, done: Callable[[], int], delay: float, finished: threading.Event,
          started: float) -> None:
    if finished.wait(delay):
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    rate_column, pages_column = _columns()
    # No stdout/stderr redirection: it would swap sys.stderr under the main thread.
    bar = Progress(TextColumn("{task.description}"), BarColumn(), pages_column(), DownloadColumn(binary_units=True),
                   rate_column(started), console=Console(file=sys.stderr), auto_refresh=False,
                   redirect_stdout=False, redirect_stderr=False)
    moved = 0
    with bar:
        task = bar.add_task(label, total=total)
        while True:
            last_round = finished.wait(POLL_INTERVAL)
            moved = _read(done, moved)
            bar.update(task, completed=min(moved, total))
            bar.refresh()
            if last_round:
                return


def _read(done: Callable[[], int], previous: int) -> int:
    try:
        return done()
    except (ReviveError, OSError):
        # The process or file went away: the step's own code says why; the bar stops where it was.
        return previous
