"""The pipeline of one image: config → recipes → fetch → build → rootfs → cpio → manifest.

:func:`plan_image` reads and checks every input (config, recipes, tables, overlay
templates) before anything is written; :func:`build_image` then carries the plan out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from khib_build import overlays, paths
from khib_build.build import (
    BuildSettings,
    PackageResult,
    build_package,
    package_key,
    toolchain_identity,
)
from khib_build.cache import Cache
from khib_build.config import ImageConfig, load_config
from khib_build.cpio import pack_tree, source_date_epoch
from khib_build.devtable import TableEntry, merge_tables
from khib_build.errors import UsageError
from khib_build.fetch import Sources, fetch, sha256_of
from khib_build.fsutil import write_atomically
from khib_build.recipes import Recipe, resolve
from khib_build.report import say
from khib_build.rootfs import assemble


@dataclass(frozen=True)
class Options:
    """How to run, as the command line and environment say."""

    outdir: Path
    dl_dir: Path | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    offline: bool = False
    fetch_deadline: float = 300.0
    fetch_retries: int = 2
    jobs: int = os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """Every input of an image, read and checked."""

    config: ImageConfig
    recipes: list[Recipe]
    tables: dict[str, TableEntry]
    overlay_items: list[overlays.OverlayItem]


@dataclass(frozen=True)
class ImageResult:
    path: Path
    size: int
    sha256: str
    packages: list[PackageResult]
    manifest: Path


def plan_image(config_path: Path) -> Plan:
    config = load_config(config_path)
    recipes = resolve(config)
    tables = merge_tables(
        [*config.device_tables, *(t for r in recipes for t in r.device_tables)],
        [*config.file_lists, *(t for r in recipes for t in r.file_lists)],
    )
    items = overlays.plan(config.overlays, template_context(config, recipes))
    return Plan(config, recipes, tables, items)


def template_context(config: ImageConfig, recipes: list[Recipe]) -> dict[str, Any]:
    """The variables overlay templates see."""
    return {
        "image": {"name": config.name, "version": config.version, "arch": config.arch},
        "packages": {r.name: {"version": r.version, "license": r.license} for r in recipes},
    }


def settings_for(plan: Plan, options: Options) -> BuildSettings:
    cache = Cache(paths.cache_dir(options.cache_dir), enabled=not options.no_cache)
    sources = Sources(
        dl_dir=paths.download_dir(options.dl_dir, plan.config.download_dir),
        mirrors=plan.config.mirrors,
        offline=options.offline,
        apt_state=cache.root / "apt-sources",
        deadline=options.fetch_deadline,
        retries=options.fetch_retries,
    )
    return BuildSettings(
        config=plan.config,
        outdir=options.outdir.resolve(),
        sources=sources,
        cache=cache,
        jobs=max(1, options.jobs),
        epoch=source_date_epoch(plan.config.source_date_epoch),
    )


def fetch_sources(plan: Plan, options: Options, names: list[str] | None = None) -> list[Path]:
    """Download and verify the sources of the named packages (all by default)."""
    settings = settings_for(plan, options)
    known = {r.name for r in plan.recipes}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise UsageError(f"not in the image: {', '.join(unknown)}; packages: {', '.join(known)}")
    wanted = [r for r in plan.recipes if r.source and (not names or r.name in names)]
    return [fetch(r.source, settings.sources) for r in wanted if r.source]


def build_image(plan: Plan, options: Options) -> ImageResult:
    """Build every package (or take it from the cache), assemble, pack and describe the image."""
    settings = settings_for(plan, options)
    os.umask(0o022)
    toolchain = toolchain_identity(plan.config)
    results: dict[str, PackageResult] = {}
    for recipe in plan.recipes:
        key = package_key(recipe, settings, toolchain, [results[d].key for d in recipe.depends])
        results[recipe.name] = build_package(recipe, settings, key)
    outdir = settings.outdir
    trees = [(name, result.staging) for name, result in results.items()]
    assemble(trees, plan.overlay_items, outdir / "rootfs")
    image = outdir / plan.config.output
    say(f"packing {image.name} ({plan.config.compression})")
    pack_tree(outdir / "rootfs", plan.tables, image, plan.config.compression,
              plan.config.compression_level, settings.epoch, plan.config.early_segment)
    digest = sha256_of(image)
    manifest = outdir / "manifest.json"
    write_atomically(manifest, manifest_json(plan, list(results.values()), image, digest))
    return ImageResult(image, image.stat().st_size, digest, list(results.values()), manifest)


def manifest_json(plan: Plan, results: list[PackageResult], image: Path, digest: str) -> bytes:
    config = plan.config
    document = {
        "image": {
            "name": config.name, "version": config.version, "arch": config.arch,
            "file": image.name, "size": image.stat().st_size, "sha256": digest,
            "compression": config.compression,
        },
        "packages": [
            {
                "name": r.recipe.name, "version": r.recipe.version, "license": r.recipe.license,
                "source": None if r.recipe.source is None else {
                    "file": r.recipe.source.filename, "sha256": r.recipe.source.sha256,
                    "urls": list(r.recipe.source.urls),
                },
                "cache_key": r.key,
            }
            for r in results
        ],
    }
    return (json.dumps(document, indent=2) + "\n").encode()
