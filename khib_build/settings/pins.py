"""Pinned inputs: a recipe's upstream tarball or Debian binary packages, and the kernel
source an image config may pin, each known by its file name and sha256 before it is
fetched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from khib_build.settings.kinds import NAME, URL, FilePath, Kind, ListOf, Optional, Source, Str
from khib_build.settings.schema import Origin, Record, origin_field, setting, settings_of

SHA256 = Str(r"[0-9a-f]{64}", "a sha256 of 64 lower-case hex digits", verbatim=True)
FILE_NAME = Str(r"[A-Za-z0-9][A-Za-z0-9+._~-]*", "a plain file name")
DEB_VERSION = Str(r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]*", "a Debian version, e.g. 2.36-9+deb12u4",
                  verbatim=True)
SUITE = Str(r"[a-z][a-z0-9-]*", "a Debian suite, e.g. bookworm, trixie or sid")
MEMBER = Str(r"(?!/)(?!(.*/)?\.\.(/|$))\S+", "a path inside the package, without ..")
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
    """A pinned Debian binary package: what is fetched."""

    name: str
    version: str
    sha256: str
    debian_arch: str  # Debian's name of its architecture: i386, amd64, or all
    suite: str | None  # the Debian suite it comes from; None: the suites the host's apt uses

    @property
    def filename(self) -> str:
        """The .deb's name as the archive's pool spells it (an epoch is left out)."""
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.debian_arch}.deb"

    @property
    def index_arch(self) -> str:
        """The architecture whose index apt reads it from: an Architecture: all package
        is listed in every one's, and amd64's is in every Debian suite."""
        return "amd64" if self.debian_arch == "all" else self.debian_arch


@dataclass(frozen=True, kw_only=True)
class DebsByArch:
    """The Debian binary packages of a `kind: deb` recipe, for each target architecture."""

    i386: tuple[DebPackage, ...] = setting(ListOf(Record(DebPackage)), (), "for i386 images")
    x86_64: tuple[DebPackage, ...] = setting(
        ListOf(Record(DebPackage)), (), "for x86_64 images (Debian's amd64)"
    )

    def for_arch(self, arch: str) -> tuple[Deb, ...]:
        return tuple(Deb(d.name, d.version, d.sha256, DEBIAN_ARCH[arch], None)
                     for d in getattr(self, arch))


@dataclass(frozen=True, kw_only=True)
class KernelPin:
    """A kernel source tarball pinned by sha256: carried by a Debian binary package of a
    suite, or at a URL."""

    deb: str | None = setting(
        Optional(NAME), None,
        "the Debian binary package that carries the tarball (Architecture: all), e.g. "
        "linux-source-6.12",
    )
    suite: str | None = setting(
        Optional(SUITE), None, "with deb: the Debian suite it is fetched from (bookworm, "
        "trixie, sid, ...)",
    )
    version: str | None = setting(
        Optional(DEB_VERSION), None, "with deb: the package's exact Debian version"
    )
    file: str | None = setting(
        Optional(MEMBER), None,
        "with deb: the tarball's path in the package (default: usr/src/<deb>.tar.xz)",
    )
    url: str | None = setting(Optional(URL), None, "instead of deb: the tarball's URL")
    sha256: str = setting(SHA256, help="sha256 of the .deb, or with url of the tarball")
    origin: Origin | None = origin_field()

    @property
    def member(self) -> str:
        """The tarball's path in the .deb."""
        return (self.file or f"usr/src/{self.deb}.tar.xz").removeprefix("./")

    @property
    def site(self) -> str:
        """Where the tarball comes from, as legal-info's manifest says it."""
        return self.url or f"{self.deb} {self.version} (Debian {self.suite})"

    def pinned(self) -> Deb | SourceSpec:
        """What is fetched into the download dir: the .deb, or the tarball."""
        if self.deb is None:
            assert self.url is not None
            return SourceSpec(urls=(self.url,), sha256=self.sha256)
        assert self.version is not None and self.suite is not None
        return Deb(self.deb, self.version, self.sha256, "all", self.suite)


class PathOrPin(Kind):
    """A kernel source: a path (a tarball or a tree), or a :class:`KernelPin` mapping."""

    expected = ("a file path, or a mapping (deb, suite, version and sha256; or url and "
                "sha256)")

    def parse(self, node: yaml.Node, src: Source) -> Any:
        if not isinstance(node, yaml.MappingNode):
            return FilePath().parse(node, src)
        pin: KernelPin = Record(KernelPin).parse(node, src)
        assert pin.origin is not None
        if pin.deb is not None and pin.url is not None:
            raise pin.origin.error("url", "give deb (a Debian package carrying the tarball) "
                                   "or url (the tarball), not both")
        if pin.deb is None and pin.url is None:
            raise src.error(node, "a pinned kernel source names deb (with suite, version "
                            "and sha256) or url (with sha256)")
        for key in ("suite", "version"):
            if pin.deb is not None and getattr(pin, key) is None:
                raise pin.origin.error("deb", f"deb {pin.deb}: missing key '{key}': "
                                       f"{settings_of(KernelPin)[key].help}")
        for key in ("suite", "version", "file"):
            if pin.url is not None and getattr(pin, key) is not None:
                raise pin.origin.error(key, f"{key} is for deb, not url")
        return pin

    def from_text(self, text: str) -> Path:
        return FilePath().from_text(text)
