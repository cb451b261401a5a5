"""The patches a kernel gets, and its tree with them applied.

Every kernel gets the linux recipe's backports for its release series (upstream fixes
that release lacks), read off its Makefile; the kernel khib images boot (role b) then
gets the recipe's own patches too, a user's kernel that hibernates (role a) does not.
A patch the tree already carries is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TextIO

from khib_build.errors import UsageError
from khib_build.kernel.kconfig import run_logged
from khib_build.report import say
from khib_build.settings.recipes import Recipe

RELEASE_LINE = re.compile(r"^(VERSION|PATCHLEVEL)[ \t]*=[ \t]*(\d+)[ \t]*$", re.MULTILINE)


def release_series(tree: Path) -> str:
    """A kernel tree's release series, "VERSION.PATCHLEVEL" of its Makefile (6.12)."""
    makefile = tree / "Makefile"
    with makefile.open(errors="replace") as handle:
        fields = dict(RELEASE_LINE.findall(handle.read(4096)))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise UsageError(f"{makefile} sets no VERSION and PATCHLEVEL: not a kernel tree")
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}"


def kernel_patches(linux: Recipe, series: str, role: str) -> tuple[Path, ...]:
    """What a kernel of ``series`` in ``role`` gets, in order: the backports for its
    series, then for role b the recipe's own patches."""
    backports = dict(linux.backports).get(series, ())
    return (*backports, *(linux.patches if role == "b" else ()))


def patched_tree(src: Path, patches: tuple[Path, ...], work: Path, log: TextIO) -> Path:
    """``src`` itself when no patch is needed; otherwise a hard-linked copy with each
    patched file made a copy of its own before ``patch`` touches it."""
    needed = []
    for patch in patches:
        present = subprocess.run(["patch", "-p1", "-R", "--dry-run", "-s", "-f", "-i",
                                  str(patch)], cwd=src, capture_output=True, check=False)
        if present.returncode == 0:
            say(f"kernel: {patch.name}: already in this tree, skipped")
        else:
            needed.append(patch)
    if not needed:
        return src
    tree = work / "src"
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    say("kernel: linking a private copy of the tree to patch")
    run_logged(["cp", "-al", str(src), str(tree)], log, "cp -al")
    for patch in needed:
        for rel in re.findall(rb"(?m)^\+\+\+ b/(\S+)", patch.read_bytes()):
            target = tree / os.fsdecode(rel)
            if target.is_file():
                copy = target.with_name(target.name + ".khib-copy")
                shutil.copy2(target, copy)
                os.replace(copy, target)
        say(f"kernel: applying {patch.name}")
        run_logged(["patch", "-p1", "--forward", "--batch", "-i", str(patch), "-d", str(tree)],
                   log, f"patch {patch.name}")
    return tree
