"""What an image is made of, as plain data: its settings and every package's facts.

One source for `show-info --json` (its schema is docs/show-info.schema.json) and for the
SBOM `legal-info` writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from khib_build import __version__
from khib_build.engine.scheduler import Survey
from khib_build.pipeline import Plan
from khib_build.settings.recipes import Recipe

SCHEMA_VERSION = 1


def plain(value: Any) -> Any:
    """A settings value as JSON: dataclasses as objects, paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "origin"}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def package_facts(recipe: Recipe, state: Survey | None) -> dict[str, Any]:
    """One package: identity, license, sources, patches, dependencies, cache state."""
    source = recipe.source
    return {
        "name": recipe.name,
        "version": recipe.version,
        "license": recipe.license,
        "license_files": list(recipe.license_files),
        "kind": recipe.kind,
        "recipe": str(recipe.folder),
        "source": None if source is None else {
            "file": source.filename, "sha256": source.sha256, "urls": list(source.urls),
            "debian": None if source.debian is None else {
                "package": source.debian.package, "file": source.debian.file},
        },
        "local_source": str(recipe.folder / "src") if source is None else None,
        "patches": [str(p) for p in recipe.patches],
        "depends": list(recipe.depends),
        "cache_key": state.key if state else None,
        "cache_status": state.status if state else "unknown",
    }


def show_info(plan: Plan, found: dict[str, Survey]) -> dict[str, Any]:
    """The whole image: settings, packages in build order, and the kernel recipe."""
    return {
        "schema_version": SCHEMA_VERSION,
        "khib_build_version": __version__,
        "config": str(plan.config.origin.path) if plan.config.origin else None,
        "image": plain(plan.config),
        "packages": [package_facts(r, found.get(r.name)) for r in plan.recipes],
        "kernel": package_facts(plan.linux, None),
    }
