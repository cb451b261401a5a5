"""Assemble the image tree: package staging trees merged in order, then the overlays."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from khib_build import cancel, overlays
from khib_build.errors import PackError


def assemble(trees: Sequence[tuple[str, Path]], items: Sequence[overlays.OverlayItem],
             root: Path) -> dict[str, str]:
    """Build ``root`` from (owner, tree) pairs and overlay items; return each path's owner."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    owners: dict[str, str] = {}
    for owner, tree in trees:
        for rel in merge(tree, root):
            owners[rel] = owner
    overlays.apply(items, root)
    for item in items:
        owners[item.path] = "overlay"
    return owners


def merge(tree: Path, root: Path) -> list[str]:
    """Lay ``tree`` over ``root``: files are hard-linked (copied across devices), links kept."""
    placed: list[str] = []
    for folder, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(dirs + files):
            cancel.check()
            source = Path(folder) / name
            rel = source.relative_to(tree).as_posix()
            dest = overlays.inside(root, rel)
            if source.is_dir() and not source.is_symlink():
                if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                    raise PackError(f"{tree.name}: /{rel} is a folder here but not in the image")
                dest.mkdir(exist_ok=True)
                os.chmod(dest, source.stat().st_mode & 0o7777)
            else:
                if dest.is_dir() and not dest.is_symlink():
                    raise PackError(f"{tree.name}: /{rel} would replace a folder of the image")
                dest.unlink(missing_ok=True)
                place(source, dest)
            placed.append(rel)
    return placed


def place(source: Path, dest: Path) -> None:
    """Link (or copy) one file; files hard-linked in the tree stay hard-linked."""
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
        return
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, dest)
