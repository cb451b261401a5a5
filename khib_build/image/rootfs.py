"""Assemble the image tree: package staging trees merged in order, then the overlays."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from khib_build.fsutil import make_dirs, merge
from khib_build.image import overlays


def assemble(trees: Sequence[tuple[str, Path]], items: Sequence[overlays.OverlayItem],
             root: Path) -> dict[str, str]:
    """Build ``root`` from (owner, tree) pairs and overlay items; return each path's owner."""
    if root.exists():
        shutil.rmtree(root)
    make_dirs(root)
    owners: dict[str, str] = {}
    for owner, tree in trees:
        for rel in merge(tree, root):
            owners[rel] = owner
    overlays.apply(items, root)
    for item in items:
        owners[item.path] = "overlay"
    return owners
