"""legal-info: an SPDX 2.3 SBOM of the image, and each package's license files, patches
and sources.

Upstream license files are read straight out of the verified source tarball (libarchive,
one member), a Debian package's from its copyright file, so nothing has to be unpacked
or built first.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from khib_build import __version__
from khib_build.errors import KhibError
from khib_build.fsutil import built_beside
from khib_build.pipeline import Plan
from khib_build.settings.recipes import Recipe, package_facts
from khib_build.sources.extract import deb_member, source_members


def spdx_id(name: str) -> str:
    return "SPDXRef-Package-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in name)


def spdx_package(recipe: Recipe) -> dict[str, Any]:
    """A package's facts as an SPDX package."""
    facts = package_facts(recipe)
    source = facts["source"]
    package: dict[str, Any] = {
        "SPDXID": spdx_id(facts["name"]),
        "name": facts["name"],
        "versionInfo": facts["version"],
        "downloadLocation": source["urls"][0] if source else "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": facts["license"],
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
    }
    if source:
        package["packageFileName"] = source["file"]
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": source["sha256"]}]
    return package


def sbom(plan: Plan, image_sha256: str | None, epoch: int) -> dict[str, Any]:
    """The SPDX 2.3 document: the image, its packages, what contains and depends on what.
    Deterministic: its time is SOURCE_DATE_EPOCH and its namespace a digest of its inputs."""
    config = plan.config
    packages = [spdx_package(r) for r in plan.recipes]
    image: dict[str, Any] = {
        "SPDXID": "SPDXRef-Image", "name": f"{config.name}-{config.arch}",
        "versionInfo": config.version, "packageFileName": config.output,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION", "primaryPackagePurpose": "OPERATING-SYSTEM",
        "supplier": "NOASSERTION",
    }
    if image_sha256:
        image["checksums"] = [{"algorithm": "SHA256", "checksumValue": image_sha256}]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": "SPDXRef-Image"}]
    for recipe in plan.recipes:
        relationships.append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id(recipe.name)})
        relationships += [{"spdxElementId": spdx_id(recipe.name),
                           "relationshipType": "DEPENDS_ON",
                           "relatedSpdxElement": spdx_id(dep)} for dep in recipe.depends]
    digest = hashlib.sha256(json.dumps([image, packages], sort_keys=True).encode()).hexdigest()
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{config.name}-{config.version}-{config.arch}",
        "documentNamespace": f"https://spdx.org/spdxdocs/khib-build/{config.name}-{digest}",
        "creationInfo": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
            "creators": [f"Tool: khib-build-{__version__}"],
        },
        "packages": [image, *packages],
        "relationships": relationships,
    }


def license_texts(recipe: Recipe, files: list[Path]) -> dict[str, bytes]:
    """The recipe's license files: each deb's copyright file, or the files named in
    license_files, from the source tarball's top folder or its src/."""
    if recipe.kind == "deb":
        texts = {}
        for deb in files:
            name = deb.name.split("_", 1)[0]
            text = deb_member(deb, f"usr/share/doc/{name}/copyright")
            if text is None:
                raise KhibError(f"package {recipe.name}: {deb.name} has no "
                                f"usr/share/doc/{name}/copyright")
            texts[f"{name}.copyright"] = text
        return texts
    source = files[0] if files else recipe.folder / "src"
    wanted = set(recipe.license_files)
    texts = source_members(source, wanted)
    missing = sorted(wanted - texts.keys())
    if missing:
        raise KhibError(f"package {recipe.name}: license file(s) {', '.join(missing)} "
                        f"not in {source}")
    return texts


def copyleft(recipe: Recipe) -> bool:
    """Whether the license asks for the source to travel with the binary (GPL, LGPL, AGPL)."""
    return "GPL" in recipe.license


def source_archive(folder: Path, target: Path, epoch: int) -> None:
    """A package's own src/ as a tar.gz that is the same bytes for the same files."""
    def normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = epoch
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    top = target.name.removesuffix(".tar.gz")
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [folder, *sorted(p for p in folder.rglob("*")
                                     if "__pycache__" not in p.parts)]:
            rel = path.relative_to(folder).as_posix()
            tar.add(path, top if rel == "." else f"{top}/{rel}", recursive=False,
                    filter=normal)


def own_archive(recipe: Recipe) -> str:
    """The name sources/ gives a package's own src/ as a tarball."""
    return f"{recipe.name}-{recipe.version}.tar.gz"


def shipped_sources(recipe: Recipe, files: list[Path], debian: list[Path], work: Path,
                    epoch: int) -> list[Path]:
    """What sources/ ships of a package: its verified tarball, for a copyleft deb the
    Debian source it was built from, or its own src/ made into a tarball (in ``work``)."""
    if recipe.kind == "deb":
        return debian
    if files:
        return files[:1]
    if not (recipe.folder / "src").is_dir():
        return []
    archive = work / own_archive(recipe)
    source_archive(recipe.folder / "src", archive, epoch)
    return [archive]


def write_package(work: Path, recipe: Recipe, licenses: dict[str, bytes],
                  sources: list[Path], patches: tuple[Path, ...]) -> None:
    """licenses/<name>/…, patches/<name>/… and sources/<name>-<version>/… (the sources
    and the patches, each under its own name, or where two patches share one, with its
    number in the order they apply; a large file linked rather than copied where the
    file system allows)."""
    for name, text in licenses.items():
        target = work / "licenses" / recipe.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text)
    shipped = work / "sources" / f"{recipe.name}-{recipe.version}"
    shipped.mkdir(parents=True)
    unique = len({p.name for p in patches}) == len(patches)
    named = {p: p.name if unique else f"{n:02d}-{p.name}" for n, p in enumerate(patches, 1)}
    for patch, name in named.items():
        target = work / "patches" / recipe.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(patch, target)
    for path, name in [*((s, s.name) for s in sources), *named.items()]:
        try:
            os.link(path, shipped / name)
        except OSError:
            shutil.copyfile(path, shipped / name)


@dataclass(frozen=True)
class KernelLegal:
    """What legal-info says of the kernel the image boots with."""

    recipe: Recipe  # the linux recipe: its license and license files
    tree: Path  # the unpacked source, where the license files are read
    archive: Path | None  # the tarball it came from (None for a tree), shipped in sources/
    identity: str  # the tarball's sha256, or a digest of the tree
    site: str  # the Debian package and version that installed or carried it, its URL, or ""
    patches: tuple[Path, ...]  # the patches the kernel gets (its backports, its role's)


def installed_by(path: Path) -> str:
    """"package version" of the Debian package a host file belongs to, or ""."""
    found = subprocess.run(["dpkg-query", "-S", str(path)], capture_output=True, text=True,
                           check=False)
    if found.returncode != 0:
        return ""
    package = found.stdout.split(":", 1)[0]
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, check=False).stdout
    return f"{package} {version}".strip()


MANIFEST_COLUMNS = ("PACKAGE", "VERSION", "LICENSE", "LICENSE FILES", "SOURCE ARCHIVE",
                    "SOURCE SHA256", "SOURCE SITE", "DEPENDENCIES")


def manifest_rows(plan: Plan, fetched: dict[str, list[Path]],
                  kernel: KernelLegal | None) -> list[tuple[str, ...]]:
    """One row per package (and the kernel), as Buildroot's legal-info manifest.csv."""
    rows = []
    for recipe in plan.recipes:
        files = fetched.get(recipe.name, [])
        pins = recipe.pins(plan.config.arch)
        licenses = [f"{p.name.split('_', 1)[0]}.copyright" for p in files] \
            if recipe.kind == "deb" else list(recipe.license_files)
        site = recipe.source.urls[0] if recipe.source else \
            "Debian archive" if recipe.kind == "deb" else "src/ of the recipe"
        rows.append((recipe.name, recipe.version, recipe.license, " ".join(licenses),
                     " ".join(p.name for p in files) or own_archive(recipe),
                     " ".join(p.sha256 for p in pins), site, " ".join(recipe.depends)))
    if kernel is not None:
        recipe = kernel.recipe
        rows.append((recipe.name, recipe.version, recipe.license,
                     " ".join(recipe.license_files),
                     kernel.archive.name if kernel.archive else f"(a tree: {kernel.tree})",
                     kernel.identity, kernel.site or "local", ""))
    return rows


def write_legal_info(plan: Plan, fetched: dict[str, list[Path]],
                     debian: dict[str, list[Path]], kernel: KernelLegal | None,
                     image_sha256: str | None, epoch: int, folder: Path) -> Path:
    """Fill ``folder`` with sbom.spdx.json, manifest.csv, licenses/<pkg>/…,
    patches/<pkg>/… and sources/<pkg>-<version>/… (the kernel's too): made beside it and
    swapped in whole, so a failed run leaves the previous one intact."""
    with built_beside(folder) as work, tempfile.TemporaryDirectory() as scratch:
        with (work / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(manifest_rows(plan, fetched, kernel))
        for recipe in plan.recipes:
            files = fetched.get(recipe.name, [])
            write_package(work, recipe, license_texts(recipe, files), shipped_sources(
                recipe, files, debian.get(recipe.name, []), Path(scratch), epoch),
                recipe.patches)
        if kernel is not None:
            write_package(work, kernel.recipe, license_texts(kernel.recipe, [kernel.tree]),
                          [kernel.archive] if kernel.archive else [], kernel.patches)
        (work / "sbom.spdx.json").write_text(json.dumps(sbom(plan, image_sha256, epoch),
                                                         indent=2) + "\n")
        work.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
    return folder / "sbom.spdx.json"
