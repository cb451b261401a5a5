"""legal-info: the image's SBOMs (SPDX 2.3 and CycloneDX 1.6), a manifest, and each
package's license files, patches and sources.

Upstream license files are read straight out of the verified source tarball (libarchive,
one member), a Debian package's from its copyright file, so nothing has to be unpacked
or built first.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from khib_build.errors import KhibError
from khib_build.fsutil import built_beside
from khib_build.pipeline import Plan
from khib_build.reports.cyclonedx import cyclonedx_document
from khib_build.reports.sbom import Bom, Component, KernelLegal, bill_of_materials
from khib_build.reports.spdx import spdx_document
from khib_build.settings.recipes import Recipe
from khib_build.sources.extract import deb_member, source_members


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


def write_package(work: Path, package: Component, licenses: dict[str, bytes],
                  sources: list[Path], patches: tuple[Path, ...]) -> None:
    """licenses/<name>/…, patches/<name>/… and sources/<name>-<version>/… (the sources
    and the patches, each under its own name, or where two patches share one, with its
    number in the order they apply; a large file linked rather than copied where the
    file system allows)."""
    for name, text in licenses.items():
        target = work / "licenses" / package.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text)
    shipped = work / "sources" / f"{package.name}-{package.version}"
    shipped.mkdir(parents=True)
    unique = len({p.name for p in patches}) == len(patches)
    named = {p: p.name if unique else f"{n:02d}-{p.name}" for n, p in enumerate(patches, 1)}
    for patch, name in named.items():
        target = work / "patches" / package.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(patch, target)
    for path, name in [*((s, s.name) for s in sources), *named.items()]:
        try:
            os.link(path, shipped / name)
        except OSError:
            shutil.copyfile(path, shipped / name)


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
SPDX_FILE = "sbom.spdx.json"
CYCLONEDX_FILE = "sbom.cdx.json"


def manifest_rows(plan: Plan, bom: Bom, kernel: KernelLegal | None) -> list[tuple[str, ...]]:
    """One row per package (and the kernel), as Buildroot's legal-info manifest.csv."""
    rows = []
    for recipe, package in zip(plan.recipes, bom.packages, strict=True):
        files = package.parts or (package,)
        licenses = [f"{p.name}.copyright" for p in package.parts] if recipe.kind == "deb" \
            else list(recipe.license_files)
        site = package.url or ("Debian archive" if recipe.kind == "deb" else
                               "src/ of the recipe")
        rows.append((package.name, package.version, recipe.license, " ".join(licenses),
                     " ".join(p.file for p in files if p.file),
                     " ".join(p.sha256 for p in files if p.sha256), site,
                     " ".join(recipe.depends)))
    if kernel is not None and bom.kernel is not None:
        recipe = kernel.recipe
        rows.append((recipe.name, bom.kernel.version, recipe.license,
                     " ".join(recipe.license_files),
                     bom.kernel.file or f"(a tree: {kernel.tree})", kernel.identity,
                     kernel.site or "local", ""))
    return rows


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_legal_info(plan: Plan, fetched: dict[str, list[Path]],
                     debian: dict[str, list[Path]], kernel: KernelLegal | None,
                     image_sha256: str | None, epoch: int, folder: Path) -> list[Path]:
    """Fill ``folder`` with the SBOMs (sbom.spdx.json, sbom.cdx.json), manifest.csv,
    licenses/<pkg>/…, patches/<pkg>/… and sources/<pkg>-<version>/… (the kernel's too):
    made beside it and swapped in whole, so a failed run leaves the previous one intact.
    The SBOMs' paths."""
    with built_beside(folder) as work, tempfile.TemporaryDirectory() as scratch:
        shipped = {r.name: shipped_sources(r, fetched.get(r.name, []), debian.get(r.name, []),
                                           Path(scratch), epoch) for r in plan.recipes}
        bom = bill_of_materials(plan, shipped, kernel, image_sha256, epoch)
        with (work / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(manifest_rows(plan, bom, kernel))
        for recipe, package in zip(plan.recipes, bom.packages, strict=True):
            write_package(work, package, license_texts(recipe, fetched.get(recipe.name, [])),
                          shipped[recipe.name], recipe.patches)
        if kernel is not None and bom.kernel is not None:
            write_package(work, bom.kernel, license_texts(kernel.recipe, [kernel.tree]),
                          [kernel.archive] if kernel.archive else [], kernel.patches)
        write_json(work / SPDX_FILE, spdx_document(bom))
        write_json(work / CYCLONEDX_FILE, cyclonedx_document(bom))
        work.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
    return [folder / SPDX_FILE, folder / CYCLONEDX_FILE]
