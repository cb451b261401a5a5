"""What every recipe kind says about itself, and the steps most kinds share."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from khib_build import report
from khib_build.settings.recipes import Recipe, render_command
from khib_build.sources.fetch import Sources, fetch

# A build step: its name and a shell command, or a Python action.
Step = tuple[str, "str | Callable[[], None]"]
# The keys of the kinds that run the recipe's own build and install commands.
COMMANDS = frozenset({"source", "build", "install", "cflags", "ldflags"})


@dataclass(frozen=True)
class Place:
    """Where a package build happens: its sources, folders and target."""

    sources: Sources
    arch: str
    workdir: Path  # the package's build folder
    staging: Path  # where it installs ({{ destdir }})
    log: Path  # the build's log


class Kind:
    """A recipe kind; each module of this folder has one."""

    name = ""
    summary = ""  # what a recipe of the kind is, for errors and the docs
    keys: frozenset[str] = frozenset()  # the keys it takes beyond the common ones
    tree_step = "unpack"  # the name of the step that makes the tree
    package = True  # an image can list it (the kernel's recipe is not a package)
    needs_source = True  # a source tarball or the recipe's src/ (lint)
    license_in_source = True  # its license files are in its source (a .deb has its own)

    def check(self, recipe: Recipe) -> None:
        """What a recipe of the kind must have, beyond its keys (a ConfigError if not)."""

    def tree(self, recipe: Recipe, place: Place) -> Path:
        """The tree the patches apply to and the commands run in: the source unpacked."""
        return unpacked_source(recipe, place)

    def steps(self, recipe: Recipe, values: dict[str, object]) -> list[Step]:
        """The build's steps after the patches, in order."""
        return numbered("build", rendered(recipe, "build", values)) + \
            numbered("install", rendered(recipe, "install", values))


def unpacked_source(recipe: Recipe, place: Place) -> Path:
    """The fetched tarball unpacked, or the recipe's own src/."""
    source = recipe.source
    if source is None:
        own = recipe.folder / "src"
        dest = place.workdir / "src"
        if own.is_dir():
            shutil.copytree(own, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
        else:
            dest.mkdir()
        return dest
    from khib_build.sources.extract import ExtractError, extract  # (libarchive: a build's)

    archive = fetch(source, place.sources, recipe.name)
    report.step(recipe.name, recipe.version, f"unpacking {archive.name}")
    try:
        return extract(archive, place.workdir, recipe.max_expansion)
    except ExtractError as exc:
        raise ExtractError(f"package {recipe.name}: {exc}") from None


def rendered(recipe: Recipe, key: str, values: dict[str, object]) -> list[str]:
    return [render_command(recipe, key, i, values) for i in range(len(getattr(recipe, key)))]


def words(items: list[str]) -> str:
    return " ".join(shlex.quote(item) for item in items)


def numbered(step: str, items: list[str]) -> list[Step]:
    return [(f"{step} {i + 1}/{len(items)}", item) for i, item in enumerate(items)]
