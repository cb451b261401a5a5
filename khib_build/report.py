"""What khib-build tells the person running it, on standard error."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from khib_build.engine import PackageResult

QUIET = False
_LINES = threading.Lock()  # packages building side by side never mix their lines


def say(message: str) -> None:
    """One line of progress, unless ``--quiet``."""
    if not QUIET:
        with _LINES:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()


class Progress:
    """Bytes transferred: a live line on a terminal, one summary line otherwise."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.done = 0
        self.start = time.monotonic()
        self.live = sys.stderr.isatty() and not QUIET
        self.shown = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.live and now - self.shown > 0.2:
            self.shown = now
            total = f"/{self.total / 2**20:.1f}" if self.total else ""
            print(f"\r{self.label}: {self.done / 2**20:.1f}{total} MiB {self.rate():.1f} MiB/s",
                  end="", file=sys.stderr, flush=True)

    def rate(self) -> float:
        return self.done / 2**20 / max(time.monotonic() - self.start, 1e-6)

    def finish(self) -> None:
        if self.live:  # blank the live line before the summary replaces it
            print("\r" + " " * 72 + "\r", end="", file=sys.stderr)
        say(f"{self.label}: {self.done / 2**20:.1f} MiB at {self.rate():.1f} MiB/s")


def summary(packages: Sequence[PackageResult], image_status: str, seconds: float) -> None:
    """The table at the end of a build: each package's status, time and steps."""
    for result in packages:
        steps = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in result.steps)
        say(f"  {result.recipe.name:<20} {result.status:<11} {result.seconds:6.1f} s"
            + (f"  ({steps})" if steps else ""))
    say(f"  image: {image_status}; {seconds:.1f} s in all")
