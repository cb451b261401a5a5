"""Stopping a run cooperatively.

Packages build in worker threads, which an interrupt does not reach; the main thread
calls :func:`stop` when it is interrupted or a package fails, and every long loop of a
worker (downloads, unpacking, copying, waiting on a build step) calls :func:`check`, so
the run ends promptly and each worker still cleans up after itself. A worker blocked in a
read that no loop can reach (a stalled server) registers how to end that read
(:func:`ended_by_stop`): :func:`stop` calls it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from khib_build.errors import KhibError

STOP = threading.Event()
T = TypeVar("T")
_enders: dict[int, Callable[[], None]] = {}
_enders_lock = threading.Lock()


class Cancelled(KhibError):
    """The run is stopping (another package failed, or an interrupt)."""

    def __init__(self) -> None:
        super().__init__("cancelled")


def check() -> None:
    if STOP.is_set():
        raise Cancelled()


def stop() -> None:
    """Ask every worker to stop, and end the reads they are blocked in."""
    STOP.set()
    with _enders_lock:
        enders = list(_enders.values())
    for end in enders:
        with contextlib.suppress(OSError):
            end()


def wait_for(call: Callable[[], T]) -> T:
    """``call()``, run in a daemon thread and waited for until the run stops: for a
    blocking call that nothing can end early (a server that never answers). Given up on
    :func:`stop`, it is left to its own timeout; a daemon thread does not hold up the exit."""
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    while not done.wait(0.1):
        check()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


@contextlib.contextmanager
def ended_by_stop(end: Callable[[], None]) -> Iterator[None]:
    """While the block runs, :func:`stop` calls ``end`` (e.g. shuts a socket down)."""
    with _enders_lock:
        _enders[id(end)] = end
    try:
        if STOP.is_set():
            end()
        yield
    finally:
        with _enders_lock:
            _enders.pop(id(end), None)
