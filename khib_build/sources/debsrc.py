"""The Debian source package of a binary package, as legal-info ships it for GPL binaries.

The source's name and version come from the .deb's own control file; ``apt-get source
--download-only`` fetches the .dsc and the files it lists (apt checks them against the
archive's signed index) into ``<dl>/debian-src/<source>_<version>/``, where each file is
then checked against the .dsc's Checksums-Sha256, so later and offline runs take them
from there.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from khib_build.errors import FetchError
from khib_build.fsutil import sha256_of
from khib_build.sources.extract import deb_control
from khib_build.sources.fetch import Sources, apt_get, debian_like

CHECKSUM_LINE = re.compile(r"^ ([0-9a-f]{64}) \d+ (\S+)$", re.MULTILINE)


def source_of(deb: Path) -> tuple[str, str]:
    """(source package, source version) of a .deb: its Source field, or itself."""
    control = deb_control(deb)
    name, _, version = control.get("Source", control["Package"]).partition(" ")
    return name, version.strip("()") or control["Version"]


def complete(folder: Path, dsc: str) -> list[Path] | None:
    """The .dsc and its files if all are there with their sha256, else None."""
    path = folder / dsc
    if not path.is_file():
        return None
    listed = CHECKSUM_LINE.findall(path.read_text(errors="replace"))
    if not listed or any(not (folder / f).is_file() or sha256_of(folder / f) != digest
                         for digest, f in listed):
        return None
    return [path, *(folder / f for _, f in listed)]


def debian_source(deb: Path, sources: Sources, package: str) -> list[Path]:
    """The verified files of the source package ``deb`` was built from."""
    name, version = source_of(deb)
    plain = version.split(":", 1)[-1]
    folder = sources.dl_dir / "debian-src" / f"{name}_{plain}"
    dsc = f"{name}_{plain}.dsc"
    found = complete(folder, dsc)
    if found is not None:
        return found
    if sources.offline or sources.apt_state is None or not debian_like():
        raise FetchError(f"package {package}: the Debian source {name} {version} of "
                         f"{deb.name} is not in {folder} (needed for legal-info; fetch it "
                         "online once)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".apt-", dir=folder.parent))
    try:
        said = apt_get(sources.apt_state, "deb-src", None,
                       ["source", "--download-only", f"{name}={version}"], work)
        if complete(work, dsc) is None:
            raise FetchError(f"package {package}: cannot obtain the Debian source {name} "
                             f"{version} of {deb.name}: {said}")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = complete(folder, dsc)
    assert found is not None
    return found
