"""The build cache: each package's installed tree, stored under its input hash.

An entry is ``<cache>/packages/<name>/<key>/`` holding ``tree/`` and ``meta.json``.
It is assembled under a temporary name and renamed into place, so an entry either
exists whole or not at all; a run killed while storing leaves only a ``.tmp-*``
folder that no lookup trusts.  ``meta.json`` records a digest of the tree (names,
types, modes, contents, link targets); a lookup recomputes it and treats an entry that
no longer matches (a bad disk, a hand edit) as absent, and removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError
from khib_build.report import say


class Cache:
    """Package trees by key; a disabled cache finds nothing and stores nothing."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled

    def entry(self, name: str, key: str) -> Path:
        return self.root / "packages" / name / key

    def lookup(self, name: str, key: str) -> Path | None:
        """The stored tree for ``key``, if there is a complete entry that verifies."""
        entry = self.entry(name, key)
        if not self.enabled or not (entry / "meta.json").is_file():
            return None
        if verify(entry):
            return entry / "tree"
        say(f"{name}: cache entry {key[:12]} fails its digest; removed, building anew")
        shutil.rmtree(entry, ignore_errors=True)
        return None

    def store(self, name: str, key: str, tree: Path, meta: dict[str, Any]) -> None:
        if not self.enabled:
            return
        final = self.entry(name, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            shutil.copytree(tree, staging / "tree", symlinks=True)
            meta = {**meta, "tree_sha256": tree_digest(staging / "tree")}
            (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
            try:
                staging.rename(final)
            except OSError:
                if not (final / "meta.json").is_file():  # not a concurrent twin: a real failure
                    raise
        except OSError as exc:
            raise KhibError(f"{name}: cannot store it in the build cache {self.root}: "
                            f"{reason(exc)}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def tree_digest(tree: Path) -> str:
    """A hash of everything a tree holds: names, types, permission bits, data, targets."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(folder) / name
            st = path.lstat()
            rel = path.relative_to(tree).as_posix()
            digest.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                with path.open("rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


def verify(entry: Path) -> bool:
    """True if an entry's tree still has the digest its meta.json recorded."""
    try:
        recorded = json.loads((entry / "meta.json").read_text())["tree_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return tree_digest(entry / "tree") == recorded


def reason(exc: OSError) -> str:
    """What went wrong, in one line (shutil.copytree gathers its failures in a list)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        source, _, why = exc.args[0][0]
        return f"{why.split(': ', 1)[0]} (copying {source})"
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def restore(tree: Path, dest: Path) -> None:
    """Copy a cached tree to ``dest``, replacing whatever was there."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(tree, dest, symlinks=True)
