"""The build cache: each package's installed tree, stored under its input hash.

An entry is ``<cache>/packages/<name>/<key>/`` holding ``tree/`` and ``meta.json``.
It is assembled under a temporary name and renamed into place, so an entry either
exists whole or not at all; a run killed while storing leaves only a ``.tmp-*``
folder that no lookup trusts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError


class Cache:
    """Package trees by key; a disabled cache finds nothing and stores nothing."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled

    def entry(self, name: str, key: str) -> Path:
        return self.root / "packages" / name / key

    def lookup(self, name: str, key: str) -> Path | None:
        """The stored tree for ``key``, if there is a complete entry."""
        entry = self.entry(name, key)
        if self.enabled and (entry / "meta.json").is_file():
            return entry / "tree"
        return None

    def store(self, name: str, key: str, tree: Path, meta: dict[str, Any]) -> None:
        if not self.enabled:
            return
        final = self.entry(name, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            shutil.copytree(tree, staging / "tree", symlinks=True)
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
