"""lint: check recipes the way a reviewer would, before anything is built.

Schema (with file and line), a license and a license file named (and present), every
upstream source pinned by sha256, patches (and the kernel's backports) that are listed,
exist, are named NNNN-*.patch and apply to the source in order, no unused patch or file,
the folder named after the package, the version written once (``{{ version }}`` in
the source pins).  A patch is tried on the files it touches only, read
from the source tarball (libarchive) or, for the kernel, from the tree khib-build keeps
unpacked in its cache (its release's backports, then its patches).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from khib_build.engine import kinds
from khib_build.engine.kinds import kernel
from khib_build.engine.outdir import OutputDir
from khib_build.errors import ConfigError
from khib_build.fsutil import read_text
from khib_build.image.checks import image_checks, image_view
from khib_build.kernel.patches import kernel_patches, release_series
from khib_build.settings.config import ImageConfig
from khib_build.settings.recipes import BUILTIN_RECIPES, Recipe, load_recipe
from khib_build.settings.schema import compose
from khib_build.settings.versioned import repeats
from khib_build.sources.extract import source_members

PATCH_NAME = re.compile(r"\d{4}-[a-z0-9][a-z0-9.+_-]*\.patch")
PATCHED_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    recipe: str
    file: str
    line: int | None
    check: str
    message: str
    severity: str = "error"

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        warning = "warning: " if self.severity == "warning" else ""
        return f"{where}: [{self.check}] {warning}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def line_of(recipe: Recipe, key: str) -> int | None:
    return recipe.origin.lines.get(key) if recipe.origin else None


def lint_recipe(folder: Path, source_of: Callable[[Recipe], Path | None]) -> list[Finding]:
    """Every finding for the recipe in ``folder``; ``source_of`` gives its tarball or tree,
    when at hand."""
    path = folder / "recipe.yaml"
    name = folder.name
    try:
        recipe = load_recipe(path)
        kind = kinds.check(recipe)
    except ConfigError as exc:
        return [Finding(name, str(exc.path), exc.line, "schema", exc.message)]
    found: list[Finding] = []

    def finding(check: str, message: str, key: str | None = None,
                file: Path | None = None) -> None:
        line = line_of(recipe, key) if key else None
        found.append(Finding(name, str(file or path), line, check, message))

    for line, text in repeats(compose(path)):
        found.append(Finding(name, str(path), line, "version", f"{text}: the version "
                             f"{recipe.version} is written again; write {{{{ version }}}}, so "
                             "that a new version is one edit"))
    builtin = BUILTIN_RECIPES / name / "recipe.yaml"
    if folder.resolve() != builtin.parent.resolve() and builtin.is_file():
        finding("shadows", f"overrides the built-in recipe {builtin}: images that list "
                f"{name} get this one instead")
    if not recipe.license_files and kind.license_in_source:
        finding("license", "no license file named: add license_files (e.g. [COPYING])",
                "license")
    source = source_of(recipe)
    if recipe.source is None and kind.needs_source:
        source = folder / "src"  # the package's own code
        if not source.is_dir():
            finding("source", "no source: pin an upstream tarball (urls and sha256) or "
                    "keep the package's own code in src/")
            source = None
    if source is not None:
        present = source_members(source, set(recipe.license_files))
        for license_file in recipe.license_files:
            if license_file not in present:
                finding("license", f"license file {license_file} is not in {source.name}",
                        "license_files")
    named = [*((patch, "patches") for patch in recipe.patches),
             *((patch, "backports") for _, patches in recipe.backports for patch in patches)]
    listed = {p.resolve() for p, _ in named}
    for patch in sorted(p for p in (folder / "patches").rglob("*") if p.is_file()):
        if patch.resolve() not in listed:
            rel = patch.relative_to(folder / "patches")
            finding("unused", f"{rel} is in patches/ but not listed in patches: or "
                    "backports:", file=patch)
    for patch, key in named:
        if not PATCH_NAME.fullmatch(patch.name):
            finding("naming", f"patch {patch.name}: name patches NNNN-short-description.patch",
                    key)
    applied = recipe.patches
    if kind is kernel.KIND and source is not None and source.is_dir():
        applied = kernel_patches(recipe, release_series(source), "b")  # its role's, at most
    failure = apply_patches(applied, source) if applied and source is not None else None
    if failure:
        patch, message = failure
        finding("patch", message, "patches" if patch in recipe.patches else "backports")
    text = read_text(path)
    for extra in sorted((folder / "files").rglob("*")):
        rel = extra.relative_to(folder).as_posix()
        if extra.is_file() and extra.name not in text:
            finding("unused", f"{rel} is not used by the recipe", file=extra)
    return found


def image_findings(config: ImageConfig, out: OutputDir) -> list[Finding]:
    """The checks of the image built in ``out`` (if any): its ELF files read from the
    packed image, its Python imports as the build recorded them."""
    image = out.file(config.output)
    record = out.image_record()
    if not image.is_file() or record is None:
        return []
    found = image_checks(image_view(image), config, record.get("owners", {}),
                         record.get("python_problems", []))
    return [Finding(f.owner, "/" + f.path, None, f.check, f.message, f.severity)
            for f in found]


def source_for(recipe: Recipe, dl_dir: Path, kernel_tree: Callable[[], Path | None]
               ) -> Path | None:
    """The recipe's upstream source if it is at hand: its tarball in the download dir, or
    for the kernel recipe, the image's kernel tree."""
    if recipe.source is not None:
        tarball = dl_dir / recipe.source.filename
        return tarball if tarball.is_file() else None
    return kernel_tree() if recipe.kind == kernel.KIND.name else None


def apply_patches(patches: tuple[Path, ...], source: Path) -> tuple[Path, str] | None:
    """Apply the patches in order to the files they touch; the patch that failed and
    why, or None."""
    touched = {m for p in patches for m in PATCHED_FILE.findall(p.read_text(errors="replace"))}
    with tempfile.TemporaryDirectory(prefix="khib-lint-") as tree:
        for inner, data in source_members(source, touched).items():
            target = Path(tree) / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for patch in patches:
            result = subprocess.run(["patch", "-p1", "--batch", "--forward", "-i", str(patch)],
                                    cwd=tree, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                detail = (result.stdout + result.stderr).strip().splitlines()
                return patch, (f"{patch.name} does not apply to {source.name}: "
                               f"{detail[-1] if detail else 'patch failed'}")
    return None
