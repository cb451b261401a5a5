"""What an image is made of, as plain data, for `show-info --json` (its schema is
docs/show-info.schema.json): its settings, and every package's facts with its cache state.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from khib_build import __version__
from khib_build.engine.scheduler import Survey
from khib_build.pipeline import Plan
from khib_build.settings.config import ImageConfig
from khib_build.settings.recipes import Recipe, package_facts
from khib_build.settings.schema import settings_of

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


def package_info(recipe: Recipe, state: Survey | None) -> dict[str, Any]:
    """One package: its facts and its cache state."""
    return package_facts(recipe) | {"cache_key": state.key if state else None,
                                    "cache_status": state.status if state else "unknown"}


def settings_from(config: ImageConfig) -> dict[str, str]:
    """Where each setting of the image config was given ("file:line"; an included file's
    line for what it set), or "default"."""
    origin = config.origin
    return {name: origin.where(name) if origin else "default" for name in settings_of(
        type(config))}


def show_info(plan: Plan, found: dict[str, Survey]) -> dict[str, Any]:
    """The whole image: settings, packages in build order, and the kernel recipe."""
    return {
        "schema_version": SCHEMA_VERSION,
        "khib_build_version": __version__,
        "config": str(plan.config.origin.path) if plan.config.origin else None,
        "image": plain(plan.config),
        "settings_from": settings_from(plan.config),
        "packages": [package_info(r, found.get(r.name)) for r in plan.recipes],
        "kernel": package_info(plan.linux, None),
    }
