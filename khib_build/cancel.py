"""Stopping a run cooperatively.

Packages build in worker threads, which an interrupt does not reach; the main thread sets
:data:`STOP` when it is interrupted or a package fails, and every long loop of a worker
(downloads, unpacking, copying, waiting on a build step) calls :func:`check`, so the run
ends promptly and each worker still cleans up after itself.
"""

from __future__ import annotations

import threading

from khib_build.errors import KhibError

STOP = threading.Event()


class Cancelled(KhibError):
    """The run is stopping (another package failed, or an interrupt)."""

    def __init__(self) -> None:
        super().__init__("cancelled")


def check() -> None:
    if STOP.is_set():
        raise Cancelled()
