"""What khib-build tells the person running it, on standard error.

Always plain lines, one per event, so logs read well. On a terminal, and unless
``--quiet``, a live display (rich) adds progress bars below them: each download (bytes,
rate) and the packages (done / total, the step each running one is at). rich writes no
escape codes when standard error is not a terminal and no colour when NO_COLOR is set.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as Bars

_quiet = False  # set for one run by settings()
_verbose = False
_LINES = threading.Lock()  # packages building side by side never mix their lines
_live: Bars | None = None  # the live display, while one is shown
_board: Board | None = None  # the packages' bar, while packages are being built


def say(message: str) -> None:
    """One line of progress, unless ``--quiet``."""
    if _quiet:
        return
    with _LINES:
        if _live is not None:
            _live.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()


def detail(message: str) -> None:
    """A line only ``-v`` shows (the commands builds run)."""
    if _verbose:
        say(message)


@contextmanager
def settings(quiet: bool, verbose: bool) -> Iterator[None]:
    """Report as the run's options say while the block runs (``--quiet``, ``--verbose``)."""
    global _quiet, _verbose
    before = _quiet, _verbose
    _quiet, _verbose = quiet, verbose
    try:
        yield
    finally:
        _quiet, _verbose = before


@contextmanager
def live() -> Iterator[None]:
    """Progress bars while the block runs, if standard error is a terminal."""
    global _live
    if _quiet or _live is not None or not sys.stderr.isatty():
        yield  # (rich, imported only here, keeps a no-op run's start-up short)
        return
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    console = Console(stderr=True, highlight=False)
    bars = Bars(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False)
    with bars:
        _live = bars
        try:
            yield
        finally:
            _live = None


class Progress:
    """Bytes transferred: a bar on a terminal, one summary line in the end."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.done = 0
        self.start = time.monotonic()
        self.task = _live.add_task(label, total=total, info="") if _live else None

    def advance(self, count: int) -> None:
        self.done += count
        if _live is not None and self.task is not None:
            total = f"/{self.total / 2**20:.1f}" if self.total else ""
            _live.update(self.task, completed=self.done, total=self.total,
                         info=f"{self.done / 2**20:.1f}{total} MiB {self.rate():.1f} MiB/s")

    def rate(self) -> float:
        return self.done / 2**20 / max(time.monotonic() - self.start, 1e-6)

    def finish(self) -> None:
        if _live is not None and self.task is not None:
            _live.remove_task(self.task)
        say(f"{self.label}: {self.done / 2**20:.1f} MiB at {self.rate():.1f} MiB/s")


class Board:
    """The packages' bar: how many are done, and the step each running one is at."""

    def __init__(self, total: int) -> None:
        self.total, self.finished = total, 0
        self.steps: dict[str, str] = {}
        self.task = _live.add_task("packages", total=total, info="") if _live else None

    def show(self) -> None:
        if _live is not None and self.task is not None:
            running = ", ".join(f"{name}: {step}" for name, step in sorted(self.steps.items()))
            _live.update(self.task, completed=self.finished,
                         info=f"{self.finished}/{self.total} {running}")


@contextmanager
def counting(total: int) -> Iterator[None]:
    """Count packages as they are brought up to date (see step() and done())."""
    global _board
    _board = Board(total)
    try:
        yield
    finally:
        if _live is not None and _board.task is not None:
            _live.remove_task(_board.task)
        _board = None


def step(name: str, version: str, what: str) -> None:
    """Package ``name`` is now at step ``what``: its place on the bar, and with ``-v`` a
    line (without, a package says only how it ended)."""
    detail(f"{name} {version}: {what}")
    if _board is not None:
        with _LINES:
            _board.steps[name] = what
            _board.show()


def done(name: str) -> None:
    if _board is not None:
        with _LINES:
            _board.steps.pop(name, None)
            _board.finished += 1
            _board.show()
