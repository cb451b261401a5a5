"""The build cache: each package's installed tree, stored under its input hash.

An entry is ``<cache>/packages/<name>/<key>/`` holding ``tree/`` and ``meta.json``.
It is assembled under a temporary name and renamed into place, so an entry either
exists whole or not at all; a run killed while storing leaves only a ``.tmp-*``
folder that no lookup trusts.  ``meta.json`` records a digest of the tree (names,
types, modes, contents, link targets); a restore recomputes it while copying and
treats an entry that no longer matches (a bad disk, a hand edit) as absent, and
removes it.

A run holds a shared lock on every entry it uses until it ends; ``gc`` and the removal
of a corrupt entry take the exclusive lock without waiting, so they never remove what
a running build holds.  An entry's ``meta.json`` modification time is its last use.

Whoever builds a package holds ``locks/<name>-<recipe key>.lock`` while it builds:
another run (or thread) about to build the same recipe key waits for it, then finds the
entry stored, so concurrent runs on one cache build each key once.

``reads/<name>/<recipe key>/read.json`` lists the C library headers that builds of one
recipe key read (newest first): with their content they give the keys of its entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError
from khib_build.fsutil import (
    built_beside,
    copy_tree,
    exclusive,
    reason,
    tree_digest,
    walk,
    write_atomically,
)
from khib_build.report import say

READ_SETS_KEPT = 8


@dataclass(frozen=True)
class Entry:
    """One item of the cache: a stored package tree (``packages``), the header sets of a
    recipe key (``reads``), a C library sysroot, an unpacked kernel source or a private
    apt state (named after its folder)."""

    folder: str  # packages, reads, sysroots, kernel-src or apt-sources
    name: str  # the package, or the folder for the others
    key: str
    path: Path
    size: int
    last_used: float


class Cache:
    """Package trees by key; a disabled cache finds nothing and stores nothing. Its
    layout is decided here: ``packages/<name>/<key>/``, and beside them the C library's
    ``sysroots/``, unpacked ``kernel-src/`` and the private apt state ``apt-sources/``."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self.held: list[int] = []  # directory fds under a shared lock, closed at exit

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def reads(self) -> Path:
        return self.root / "reads"

    @property
    def sysroots(self) -> Path:
        return self.root / "sysroots"

    @property
    def kernel_sources(self) -> Path:
        return self.root / "kernel-src"

    @property
    def apt_sources(self) -> Path:
        return self.root / "apt-sources"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @contextlib.contextmanager
    def building(self, name: str, key: str) -> Iterator[None]:
        """Hold the build lock of one key, waiting while another run holds it; a disabled
        cache locks nothing."""
        if not self.enabled:
            yield
            return
        with exclusive(self.locks / f"{name}-{key}.lock", lambda: say(
                f"{name}: another run is building it; waiting for its result")):
            yield

    def entry(self, name: str, key: str) -> Path:
        return self.packages / name / key

    def read_sets(self, name: str, recipe_key: str) -> list[list[str]]:
        """The header sets builds of one recipe key read, the newest first."""
        record = self.reads / name / recipe_key / "read.json"
        if not self.enabled:
            return []
        try:
            sets = header_sets(json.loads(record.read_text()))
            os.utime(record)
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return sets

    def add_read_sets(self, name: str, recipe_key: str, sets: list[list[str]]) -> None:
        """Record header sets (newest first) beside those recorded, keeping the newest
        few; callers hold the recipe key's build lock."""
        if not self.enabled:
            return
        merged: list[list[str]] = []
        for found in [*sets, *self.read_sets(name, recipe_key)]:
            if found not in merged:
                merged.append(found)
        folder = self.reads / name / recipe_key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(folder / "read.json",
                             json.dumps({"sets": merged[:READ_SETS_KEPT]}).encode())
        except OSError as exc:
            raise KhibError(f"{name}: cannot record the headers it read in {folder}: "
                            f"{reason(exc)}") from None

    def meta(self, name: str, key: str) -> dict[str, Any] | None:
        """The recorded metadata of a complete entry, without checking its tree."""
        if not self.enabled:
            return None
        try:
            meta: dict[str, Any] = json.loads((self.entry(name, key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return meta

    def hold(self, entry: Path, landmark: str = "meta.json") -> int | None:
        """Take a shared lock on an entry (or any item whose ``landmark`` shows it is
        whole) for the rest of the run; None if it is gone."""
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while gc is removing this very entry
        if not (entry / landmark).exists():
            os.close(fd)
            return None
        self.held.append(fd)
        return fd

    def release(self, fd: int) -> None:
        self.held.remove(fd)
        os.close(fd)

    def restore(self, name: str, key: str, dest: Path) -> dict[str, Any] | None:
        """Copy the entry's tree to ``dest``, checking its digest on the way; its meta."""
        entry = self.entry(name, key)
        meta = self.meta(name, key)
        fd = None if meta is None else self.hold(entry)
        if meta is None or fd is None:
            return None
        replace_dir(dest)
        if copy_tree(entry / "tree", dest) == meta.get("tree_sha256"):
            with contextlib.suppress(OSError):
                os.utime(entry / "meta.json")
            return meta
        shutil.rmtree(dest)
        say(f"{name}: cache entry {key[:12]} fails its digest; removed, building anew")
        self.release(fd)
        remove_entry(entry)
        return None

    def store(self, name: str, key: str, tree: Path, meta: dict[str, Any],
              replace: bool = False) -> dict[str, Any]:
        """Store a copy of ``tree``; return the meta with the tree's digest added."""
        final = self.entry(name, key)
        if not self.enabled:
            return {**meta, "tree_sha256": tree_digest(tree)}
        try:
            with built_beside(final, landed=lambda twin: (twin / "meta.json").is_file()) \
                    as staging:
                meta = {**meta, "tree_sha256": copy_tree(tree, staging / "tree")}
                (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
                if replace:
                    discard(final)
        except OSError as exc:
            raise KhibError(f"{name}: cannot store it in the build cache {self.root}: "
                            f"{reason(exc)} (copying {tree})") from None
        self.hold(final)
        return meta

    @contextlib.contextmanager
    def adopting(self, name: str, key: str) -> Iterator[Path]:
        """A temporary entry folder to fill (``tree/`` and ``meta.json``); renamed into
        place if the block succeeds and the filled tree has the digest its meta says."""
        final = self.entry(name, key)
        # A rename that fails leaves the entry to a concurrent twin, if any.
        with built_beside(final, landed=lambda _: True) as staging:
            yield staging
            if not verify(staging):
                raise ValueError("the tree does not match its recorded digest")

    def latest_inputs(self, name: str) -> dict[str, str] | None:
        """The inputs of the package's most recently used entry, if any."""
        metas = [m for m in (self.packages / name).glob("*/meta.json")
                 if not m.parent.name.startswith(".")]
        for meta in sorted(metas, key=mtime, reverse=True):
            with contextlib.suppress(OSError, ValueError, KeyError):
                inputs: dict[str, str] = json.loads(meta.read_text())["inputs"]
                return inputs
        return None

    def use(self, item: Path) -> Path:
        """Mark a sysroot, kernel source or apt state as used now, and hold it (shared)
        for the rest of the run so that gc leaves it alone."""
        with contextlib.suppress(OSError):
            os.utime(item)
        if self.hold(item, ".") is None:
            raise KhibError(f"{item} was removed by cache gc just as this run needed it; "
                            "run again")
        return item

    def entries(self) -> list[Entry]:
        """Every complete item of every folder, with its size and last use (a package
        entry's meta.json time, another item's folder time)."""
        found = []
        for meta in sorted(self.packages.glob("*/*/meta.json")):
            entry = meta.parent
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                found.append(Entry("packages", entry.parent.name, entry.name, entry,
                                   du(entry), meta.stat().st_mtime))
        for record in sorted(self.reads.glob("*/*/read.json")):
            with contextlib.suppress(FileNotFoundError):
                found.append(Entry("reads", record.parent.parent.name, record.parent.name,
                                   record.parent, du(record.parent), record.stat().st_mtime))
        for folder in (self.sysroots, self.kernel_sources, self.apt_sources):
            items = sorted(folder.iterdir()) if folder.is_dir() else []
            for item in items:
                if item.name.startswith(".") or not item.is_dir():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.append(Entry(folder.name, folder.name, item.name, item, du(item),
                                       item.stat().st_mtime))
        return found

    def gc(self, max_size: int) -> tuple[list[Entry], list[Entry]]:
        """Remove least recently used items of every folder until the cache fits
        ``max_size`` bytes; return what was removed and what was kept only because a run
        holds it."""
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        removed: list[Entry] = []
        busy: list[Entry] = []
        for entry in entries:
            if total <= max_size:
                break
            if remove_entry(entry.path):
                removed.append(entry)
                total -= entry.size
            else:
                busy.append(entry)
        return removed, busy


def header_sets(record: Any) -> list[list[str]]:
    """The header sets of a ``read.json`` (or its remote copy), as lists of names."""
    return [[str(h) for h in s] for s in record["sets"] if isinstance(s, list)]


def remove_entry(entry: Path) -> bool:
    """Remove an entry unless a run holds it; False if one does."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        discard(entry)
        return True
    finally:
        os.close(fd)


def discard(entry: Path) -> None:
    """Move an entry out of the way at once, then delete it."""
    doomed = entry.with_name(f".tmp-gone-{entry.name}-{time.monotonic_ns()}")
    try:
        entry.rename(doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def verify(entry: Path) -> bool:
    """True if an entry's tree still has the digest its meta.json recorded."""
    try:
        recorded = json.loads((entry / "meta.json").read_text())["tree_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return tree_digest(entry / "tree") == recorded


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def du(path: Path) -> int:
    """Bytes of the regular files below ``path``."""
    return sum(st.st_size for _, _, st in walk(path) if stat.S_ISREG(st.st_mode))


def replace_dir(path: Path) -> None:
    """An empty folder at ``path``, whatever was there."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
