"""Assemble the image tree: package staging trees merged in order without what only
builds need (headers, static libraries, pkg-config and libtool files), then the overlays."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from khib_build.fsutil import make_dirs, merge
from khib_build.image import overlays

# What packages install for other packages to build against: kept in their sysroots, left
# out of the image, as Buildroot's target-finalize does.
BUILD_ONLY_DIRS = ("usr/include", "usr/lib/pkgconfig", "usr/share/pkgconfig",
                   "usr/share/aclocal")
BUILD_ONLY_SUFFIXES = (".a", ".la")


def build_only(rel: str) -> bool:
    return rel.endswith(BUILD_ONLY_SUFFIXES) or any(
        rel == d or rel.startswith(d + "/") for d in BUILD_ONLY_DIRS)


def assemble(trees: Sequence[tuple[str, Path]], items: Sequence[overlays.OverlayItem],
             root: Path, private: bool = False) -> dict[str, str]:
    """Build ``root`` from (owner, tree) pairs and overlay items; return each path's owner.
    With ``private``, no file of ``root`` shares its data with a tree (see fsutil.merge)."""
    if root.exists():
        shutil.rmtree(root)
    make_dirs(root)
    owners: dict[str, str] = {}
    for owner, tree in trees:
        for rel in merge(tree, root, private):
            owners[rel] = owner
    for rel in sorted((r for r in owners if build_only(r)), reverse=True):
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        del owners[rel]
    overlays.apply(items, root)
    for item in items:
        owners[item.path] = "overlay"
    return owners
