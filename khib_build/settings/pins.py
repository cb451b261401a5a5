"""Pinned inputs of a recipe: an upstream tarball, or Debian binary packages, each known
by its file name and sha256 before it is fetched."""

from __future__ import annotations

from dataclasses import dataclass

from khib_build.settings.config import NAME, URL
from khib_build.settings.kinds import ListOf, Optional, Str
from khib_build.settings.schema import Record, setting

SHA256 = Str(r"[0-9a-f]{64}", "a sha256 of 64 lower-case hex digits", verbatim=True)
FILE_NAME = Str(r"[A-Za-z0-9][A-Za-z0-9+._~-]*", "a plain file name")
DEB_VERSION = Str(r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]*", "a Debian version, e.g. 2.36-9+deb12u4",
                  verbatim=True)
# Debian's name of each target architecture.
DEBIAN_ARCH = {"i386": "i386", "x86_64": "amd64"}


@dataclass(frozen=True, kw_only=True)
class DebianSource:
    """The distribution source package that carries the same upstream tarball."""

    package: str = setting(NAME, help="source package name, as `apt-get source` takes it")
    file: str = setting(FILE_NAME, help="the .orig tarball's file name in that package")


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A pinned upstream tarball."""

    urls: tuple[str, ...] = setting(ListOf(URL, min_items=1), help="upstream URLs, tried in order")
    sha256: str = setting(SHA256, help="sha256 of the tarball")
    file: str | None = setting(
        Optional(FILE_NAME), None, "file name in the download dir (default: the URL's last part)"
    )
    debian: DebianSource | None = setting(
        Optional(Record(DebianSource)), None, "Debian source package holding the same bytes"
    )

    @property
    def filename(self) -> str:
        return self.file or self.urls[0].rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class DebPackage:
    """One Debian binary package, pinned by name, version and sha256."""

    name: str = setting(NAME, help="binary package name, as `apt-get download` takes it")
    version: str = setting(DEB_VERSION, help="the exact Debian version")
    sha256: str = setting(SHA256, help="sha256 of the .deb file")


@dataclass(frozen=True)
class Deb:
    """A pinned Debian package for one target architecture: what is fetched."""

    name: str
    version: str
    sha256: str
    arch: str

    @property
    def debian_arch(self) -> str:
        return DEBIAN_ARCH[self.arch]

    @property
    def filename(self) -> str:
        """The .deb's name as the archive's pool spells it (an epoch is left out)."""
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.debian_arch}.deb"


@dataclass(frozen=True, kw_only=True)
class DebsByArch:
    """The Debian binary packages of a `kind: deb` recipe, for each target architecture."""

    i386: tuple[DebPackage, ...] = setting(ListOf(Record(DebPackage)), (), "for i386 images")
    x86_64: tuple[DebPackage, ...] = setting(
        ListOf(Record(DebPackage)), (), "for x86_64 images (Debian's amd64)"
    )

    def for_arch(self, arch: str) -> tuple[Deb, ...]:
        return tuple(Deb(d.name, d.version, d.sha256, arch) for d in getattr(self, arch))
