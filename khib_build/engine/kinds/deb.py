"""kind: deb: Debian binary packages of the image's arch, fetched, verified and unpacked
into the staging tree, without their documentation (legal-info keeps the copyright)."""

from __future__ import annotations

import shutil
from pathlib import Path

from khib_build import report
from khib_build.engine.kinds.base import Kind, Place
from khib_build.errors import BuildError
from khib_build.settings.recipes import Recipe
from khib_build.sources.fetch import fetch

# What a Debian package installs for people reading on the machine, not for an initramfs.
DOCS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian")


class Deb(Kind):
    name = "deb"
    summary = "Debian binary packages unpacked"
    keys = frozenset({"debs"})
    tree_step = "unpack debs"
    needs_source = False  # the debs are the source
    license_in_source = False  # each .deb carries its copyright file

    def check(self, recipe: Recipe) -> None:
        if not (recipe.debs.i386 or recipe.debs.x86_64):
            assert recipe.origin is not None
            raise recipe.origin.error("kind", "a deb package names its Debian packages: add "
                                      "debs with a list for i386 or x86_64")

    def tree(self, recipe: Recipe, place: Place) -> Path:
        """The Debian packages unpacked into the staging tree, which patches then apply to."""
        from khib_build.sources.extract import ExtractError, unpack_deb  # (a build's)

        debs = recipe.debs.for_arch(place.arch)
        if not debs:
            raise BuildError(recipe.name, self.tree_step, place.log,
                             f"the recipe lists no Debian package for {place.arch}")
        for deb in debs:
            path = fetch(deb, place.sources, recipe.name)
            report.step(recipe.name, recipe.version, f"unpacking {path.name}")
            try:
                unpack_deb(path, place.staging, recipe.max_expansion)
            except ExtractError as exc:
                raise ExtractError(f"package {recipe.name}: {exc}") from None
        for folder in DOCS:
            shutil.rmtree(place.staging / folder, ignore_errors=True)
        return place.staging


KIND = Deb()
