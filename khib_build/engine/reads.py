"""Which files of a tree a build opens, seen through Linux's inotify.

A package's key holds the content of the C library files its build read, not the
versions of the C library's Debian packages (see :mod:`keys`), so a build is watched:
every directory of its sysroot gets an inotify watch for ``IN_OPEN``, and a thread
collects the names opened until the build ends.  When the kernel's event queue
overflows, or inotify is unavailable, the watch reports itself incomplete and the
caller counts every file as read, which is never wrong, only coarser.

Through ctypes on the C library: pyinotify needs asyncore (gone in Python 3.12) and
inotify_simple is not packaged for Debian 12.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IN_OPEN = 0x20
IN_Q_OVERFLOW = 0x4000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


@dataclass
class Reads:
    """The files opened below ``root`` (relative paths), and whether every open was seen."""

    root: Path
    paths: set[str] = field(default_factory=set)
    complete: bool = True


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def watching(root: Path) -> Iterator[Reads]:
    """Collect what is opened below ``root`` while the block runs (files created
    inside it afterwards are not watched: a sysroot only grows before its build)."""
    reads = Reads(root)
    lib = libc()
    fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        reads.complete = False
        yield reads
        return
    folders: dict[int, str] = {}
    try:
        for folder in [root, *sorted(p for p in root.rglob("*")
                                     if p.is_dir() and not p.is_symlink())]:
            wd = lib.inotify_add_watch(fd, os.fsencode(folder), IN_OPEN | IN_ONLYDIR)
            if wd < 0:
                reads.complete = False
                break
            folders[wd] = folder.relative_to(root).as_posix()
        stop_r, stop_w = os.pipe()
        collector = threading.Thread(target=collect, args=(fd, stop_r, folders, reads),
                                     daemon=True)
        collector.start()
        try:
            yield reads
        finally:
            os.write(stop_w, b"x")
            collector.join()
            os.close(stop_r)
            os.close(stop_w)
    finally:
        os.close(fd)


def collect(fd: int, stop: int, folders: dict[int, str], reads: Reads) -> None:
    """Read events until ``stop`` is readable, then drain what is left; any failure
    leaves the watch incomplete."""
    try:
        while True:
            ready, _, _ = select.select([fd, stop], [], [])
            if fd in ready:
                drain(fd, folders, reads)
            if stop in ready:
                drain(fd, folders, reads)
                return
    except (OSError, ValueError, struct.error):
        reads.complete = False


def drain(fd: int, folders: dict[int, str], reads: Reads) -> None:
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            wd, mask, _, size = EVENT.unpack_from(data, offset)
            name = data[offset + EVENT.size:offset + EVENT.size + size].rstrip(b"\0")
            offset += EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                reads.complete = False
            elif name and not mask & IN_ISDIR and wd in folders:
                folder = folders[wd]
                entry = os.fsdecode(name)
                reads.paths.add(entry if folder == "." else f"{folder}/{entry}")
