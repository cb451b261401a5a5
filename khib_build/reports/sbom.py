"""What legal-info's SBOMs say the image is made of: each package, each Debian package of
a deb package, and the kernel, with its license, file, sha256, download URL and package
URL (purl). Worked out once, for the SPDX and the CycloneDX document and the manifest."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from khib_build.fsutil import sha256_of
from khib_build.kernel.kconfig import kernel_version
from khib_build.pipeline import Plan
from khib_build.settings.pins import Deb
from khib_build.settings.recipes import Recipe


@dataclass(frozen=True)
class KernelLegal:
    """What legal-info says of the kernel the image boots with."""

    recipe: Recipe  # the linux recipe: its license and license files
    tree: Path  # the unpacked source, where the license files are read
    archive: Path | None  # the tarball it came from (None for a tree), shipped in sources/
    identity: str  # the tarball's sha256, or a digest of the tree
    site: str  # the Debian package and version that installed or carried it, its URL, or ""
    patches: tuple[Path, ...]  # the patches the kernel gets (its backports, its role's)

    @property
    def url(self) -> str | None:
        """Where the tarball was downloaded from, when its site is a URL."""
        return self.site if "://" in self.site else None


@dataclass(frozen=True)
class Component:
    """One thing an SBOM lists: the image, a package, a Debian package, the kernel."""

    ref: str  # unique in the SBOM: Image, Package-<name>, Deb-<package>/<.deb>, Kernel-<name>
    kind: str  # "image", "package", "deb" (a deb package's Debian package) or "kernel"
    name: str
    version: str
    license: str | None  # as declared (an SPDX expression, or a name); None: not said
    purl: str
    file: str | None = None  # the source tarball or .deb it is made from, or the image's
    sha256: str | None = None  # that file's
    url: str | None = None  # where that file is downloaded from
    depends: tuple[str, ...] = ()  # the refs of the packages it builds against
    parts: tuple[Component, ...] = ()  # a deb package's Debian packages


@dataclass(frozen=True)
class Bom:
    """An SBOM's content, whichever format writes it."""

    image: Component
    packages: tuple[Component, ...]  # in build order
    kernel: Component | None
    timestamp: str  # SOURCE_DATE_EPOCH, as ISO 8601 in UTC

    def top_level(self) -> list[Component]:
        """The packages, then the kernel."""
        return [*self.packages, *([self.kernel] if self.kernel else [])]

    def components(self) -> list[Component]:
        """Every component but the image: the packages with their parts, and the kernel."""
        return [each for top in self.top_level() for each in (top, *top.parts)]


def purl(kind: str, name: str, version: str, namespace: str = "", **qualifiers: str | None
         ) -> str:
    """A package URL in the purl spec's canonical spelling: percent-encoded, qualifiers
    sorted, those without a value left out."""
    def encoded(text: str) -> str:
        return quote(text, safe=":/")

    path = "/".join(encoded(part) for part in (namespace, name) if part)
    given = [f"{key}={encoded(value)}" for key, value in sorted(qualifiers.items()) if value]
    return f"pkg:{kind}/{path}@{encoded(version)}" + ("?" + "&".join(given) if given else "")


def package_ref(name: str) -> str:
    return f"Package-{name}"


def deb_component(recipe: Recipe, deb: Deb) -> Component:
    """A Debian package a deb package is made of, under the package's license."""
    return Component(f"Deb-{recipe.name}/{deb.filename}", "deb", deb.name, deb.version,
                     recipe.license, purl("deb", deb.name, deb.version, "debian",
                                          arch=deb.debian_arch),
                     deb.filename, deb.sha256)


def package_component(recipe: Recipe, arch: str, shipped: list[Path]) -> Component:
    """A package: its pinned tarball, its Debian packages (as parts), or its own src/
    as the tarball legal-info ships (``shipped``)."""
    source = recipe.source
    if source is not None:
        file, sha256, url = source.filename, source.sha256, source.urls[0]
    elif recipe.kind != "deb" and shipped:
        file, sha256, url = shipped[0].name, sha256_of(shipped[0]), None
    else:
        file = sha256 = url = None
    parts = tuple(deb_component(recipe, deb) for deb in recipe.debs.for_arch(arch)) \
        if recipe.kind == "deb" else ()
    return Component(package_ref(recipe.name), "package", recipe.name, recipe.version,
                     recipe.license, purl("generic", recipe.name, recipe.version,
                                          download_url=url),
                     file, sha256, url, tuple(package_ref(d) for d in recipe.depends), parts)


def kernel_component(kernel: KernelLegal) -> Component:
    """The kernel, by the release its tree's Makefile names."""
    name, version = kernel.recipe.name, kernel_version(kernel.tree)
    return Component(f"Kernel-{name}", "kernel", name, version, kernel.recipe.license,
                     purl("generic", name, version, download_url=kernel.url),
                     kernel.archive.name if kernel.archive else None,
                     kernel.identity if kernel.archive else None, kernel.url)


def bill_of_materials(plan: Plan, shipped: dict[str, list[Path]], kernel: KernelLegal | None,
                      image_sha256: str | None, epoch: int) -> Bom:
    """The image's SBOM content: ``shipped`` is what legal-info's sources/ ships of each
    package, the tarball made of a package's own src/ among them."""
    config = plan.config
    name = f"{config.name}-{config.arch}"
    image = Component("Image", "image", name, config.version, None,
                      purl("generic", name, config.version), config.output, image_sha256)
    return Bom(image, tuple(package_component(r, config.arch, shipped[r.name])
                            for r in plan.recipes),
               kernel_component(kernel) if kernel else None,
               time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)))


def digest(document: dict[str, Any]) -> str:
    """The sha256 of a document's content: what names it, the same for the same content."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
