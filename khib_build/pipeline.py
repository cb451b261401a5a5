"""The pipeline of one image: config → recipes → fetch → build → rootfs → cpio → manifest.

:func:`plan_image` reads and checks every input (config, recipes, tables, overlay
templates) before anything is written; :func:`build_image` then carries the plan out.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khib_build import cancel
from khib_build.engine import kinds
from khib_build.engine.build import BuildSettings
from khib_build.engine.cache import Cache
from khib_build.engine.keys import LibcFiles, image_inputs, key_of, toolchain_inputs
from khib_build.engine.outdir import OutputDir
from khib_build.engine.scheduler import Engine, PackageResult, Survey, changes, dependents, survey
from khib_build.engine.sysroot import base_sysroot, libc_files, libc_packages, libc_versions
from khib_build.errors import KhibError, UsageError
from khib_build.fsutil import sha256_of, stamp, write_atomically
from khib_build.image import overlays
from khib_build.image.devtable import TableEntry, merge_tables
from khib_build.kernel.kconfig import Request, fragment_text, image_requests
from khib_build.python import pyclosure
from khib_build.report import detail, say
from khib_build.settings.config import ImageConfig, load_config
from khib_build.settings.kinds import suggest
from khib_build.settings.options import Options, download_dir, epoch
from khib_build.settings.recipes import (
    BUILTIN_RECIPES,
    KERNEL_RECIPE,
    Recipe,
    find_recipe,
    load_recipe,
    package_facts,
    resolve,
    search_path,
    shadowed,
)
from khib_build.sources.fetch import Sources, fetch

if TYPE_CHECKING:
    from khib_build.image.checks import Finding


@dataclass(frozen=True)
class Plan:
    """Every input of an image, read and checked."""

    config: ImageConfig
    recipes: list[Recipe]
    tables: dict[str, TableEntry]
    overlay_items: list[overlays.OverlayItem]
    linux: Recipe  # the kernel recipe: its options and patches
    kernel_requests: dict[str, Request]
    shadowed: list[tuple[Path, Path]]  # (used, hidden): one package in two recipe dirs

    @property
    def by_name(self) -> dict[str, Recipe]:
        return {r.name: r for r in self.recipes}


@dataclass(frozen=True)
class ImageResult:
    path: Path
    size: int
    sha256: str
    status: str  # "packed" or "up to date"
    packages: list[PackageResult]
    manifest: Path
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"image": str(self.path), "size": self.size, "sha256": self.sha256,
                "status": self.status, "manifest": str(self.manifest),
                "seconds": round(self.seconds, 3),
                "packages": [r.as_dict() for r in self.packages]}


@dataclass(frozen=True)
class Run:
    """One command's context, made once by :func:`start` and passed down: the plan (the
    config and its recipes), the run options, and what they give a build (output dir,
    cache, sources, epoch)."""

    plan: Plan
    options: Options
    settings: BuildSettings


def start(options: Options) -> Run:
    """The context of a command: its config and recipes read and checked, its settings."""
    plan = plan_image(options.config)
    return Run(plan, options, settings_for(plan, options))


def plan_image(config_path: Path) -> Plan:
    config = load_config(config_path)
    recipes = resolve(config)
    tables = merge_tables(
        [*config.device_tables, *(t for r in recipes for t in r.device_tables)],
        [*config.file_lists, *(t for r in recipes for t in r.file_lists)],
    )
    items = overlays.plan(config.overlays, template_context(config, recipes))
    linux = load_recipe(find_recipe(KERNEL_RECIPE, search_path(config)) or
                        BUILTIN_RECIPES / KERNEL_RECIPE / "recipe.yaml")
    for recipe in recipes:
        kind = kinds.check(recipe)
        if not kind.package:
            assert config.origin is not None
            raise config.origin.error("packages", f"{recipe.name} is a recipe of kind "
                                      f"{kind.name}, not a package: {kind.summary}")
    kinds.check(linux)
    return Plan(config, recipes, tables, items, linux, image_requests(config, linux, recipes),
                shadowed(recipes, config))


def template_context(config: ImageConfig, recipes: list[Recipe]) -> dict[str, Any]:
    """The variables overlay templates see."""
    return {
        "image": {"name": config.name, "version": config.version, "arch": config.arch},
        "packages": {r.name: {"version": r.version, "license": r.license} for r in recipes},
    }


def sources_for(config: ImageConfig, options: Options, cache: Cache) -> Sources:
    """Where and how this run fetches: the download dir, the config's mirrors, the
    fetch options, apt's private state in ``cache``."""
    return Sources(
        dl_dir=download_dir(options, config, os.environ),
        mirrors=config.mirrors,
        offline=options.offline,
        apt_state=cache.apt_sources,
        deadline=options.fetch_deadline,
        retries=options.fetch_retries,
    )


def settings_for(plan: Plan, options: Options) -> BuildSettings:
    cache = Cache(options.cache_dir.resolve(), enabled=not options.no_cache)
    return BuildSettings(
        config=plan.config,
        out=OutputDir(options.outdir.resolve()),
        sources=sources_for(plan.config, options, cache),
        cache=cache,
        jobs=options.jobs,
        epoch=epoch(options, plan.config),
    )


def fetch_sources(run: Run, names: list[str] | None = None,
                  recipes: list[Recipe] | None = None) -> dict[str, list[Path]]:
    """Download and verify the pinned files (tarballs, debs) of the named packages (all
    the image's by default, or all of ``recipes``), side by side; by package."""
    for recipe in recipes or ():  # (the image's own were checked when it was planned)
        kinds.check(recipe)
    among = run.plan.recipes if recipes is None else recipes
    check_names(names or (), [r.name for r in among])
    wanted = [(r.name, pin) for r in among if not names or r.name in names
              for pin in r.pins(run.plan.config.arch)]
    sources = run.settings.sources
    cancel.STOP.clear()
    with ThreadPoolExecutor(max_workers=run.options.jobs) as pool:
        try:
            paths = list(pool.map(lambda job: fetch(job[1], sources, job[0]), wanted))
        except BaseException:
            cancel.stop()  # the other downloads stop too
            raise
    found: dict[str, list[Path]] = {}
    for (name, _), path in zip(wanted, paths, strict=True):
        found.setdefault(name, []).append(path)
    return found


def check_names(names: Iterable[str], known: list[str]) -> None:
    """Every name is one of ``known`` packages, or a usage error with the likely one."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        hints = ", ".join(f"{name}{suggest(name, known)}" for name in unknown)
        raise UsageError(f"not in the image: {hints}; its packages: {', '.join(known)}")


def survey_image(run: Run) -> dict[str, Survey]:
    """Each package's state (up to date, cached, stale, never built), building nothing."""
    plan, settings = run.plan, run.settings
    base = base_sysroot(plan.config, settings.cache, libc_versions(libc_packages(plan.config)))
    return survey(plan.by_name, settings, toolchain_inputs(plan.config), libc_files(base))


def explain(run: Run, name: str) -> list[str]:
    """Why a package would be rebuilt: each input changed since its last build (for a
    package waiting on a stale dependency, that dependency's reasons)."""
    found = survey_image(run)
    lines = []
    while (state := found[name]).waits_on is not None:
        lines.append(f"{name}: stale: its inputs include the output of {state.waits_on}, "
                     "which must be built first")
        name = state.waits_on
    assert state.inputs is not None and state.key is not None
    if state.status in ("up to date", "cached"):
        where = "in the output dir" if state.status == "up to date" else "in the build cache"
        return [*lines, f"{name}: {state.status}: a build of these inputs is {where} "
                f"(key {state.key[:12]})"]
    settings = run.settings
    record = settings.out.record(name)
    previous = record.get("inputs") if record else settings.cache.latest_inputs(name)
    where = "its last build in the output dir" if record else "its newest cache entry"
    if previous is None:
        return [*lines, f"{name}: never built"]
    return [*lines, f"{name}: {state.status}; changed since {where}:",
            *(f"  {line}" for line in changes(previous, state.inputs))]


def check_host_tools(recipes: list[Recipe], config: ImageConfig) -> None:
    """Every host tool a recipe names, and the toolchain's strip, are on PATH, or the run
    stops before building."""
    strip = config.toolchain.strip[0]
    if any(r.strip for r in recipes) and shutil.which(strip) is None:
        raise KhibError(f"the toolchain's strip command {strip} is not on PATH; install it "
                        "(binutils) or set toolchain.strip")
    for recipe in recipes:
        missing = [tool for tool in recipe.host_tools if shutil.which(tool) is None]
        if missing:
            raise KhibError(f"package {recipe.name} needs the host tool(s) {', '.join(missing)}"
                            ", which are not on PATH; install them")


def prepare(plan: Plan, settings: BuildSettings) -> tuple[dict[str, str], LibcFiles, Path]:
    """The toolchain's identity, the C library's sysroot and the content of its files."""
    check_host_tools(plan.recipes, plan.config)
    base = base_sysroot(plan.config, settings.cache, libc_versions(libc_packages(plan.config)))
    return toolchain_inputs(plan.config), libc_files(base), base


def build_image(run: Run, force: tuple[str, ...] = ()) -> ImageResult:
    """Bring every package up to date (from the cache, or built; the ``force``d ones and
    their dependents built regardless), then the image: packed anew only when one of its
    inputs changed."""
    started = time.monotonic()
    plan, options, settings = run.plan, run.options, run.settings
    state = settings.out
    state.lock(wait=not options.no_wait)
    toolchain, libc, sysroot_base = prepare(plan, settings)
    remote = None
    if options.remote_cache and settings.cache.enabled:
        from khib_build.engine.remote import RemoteCache  # (only a run that uses one)

        remote = RemoteCache(options.remote_cache, settings.cache,
                             writable=not options.remote_cache_read_only,
                             timeout=options.remote_timeout)
    engine = Engine(plan.by_name, settings, toolchain, libc, sysroot_base, remote,
                    dependents(force, plan.by_name),
                    options.explain)
    results = list(engine.run().values())
    image = state.file(plan.config.output)
    inputs = image_inputs(
        plan.config, plan.recipes, {r.recipe.name: r.output for r in results},
        [(repr(e), e.source) for e in plan.tables.values()],
        [(i.path, i.kind, i.mode, i.target,
          i.content if i.source is None else i.source.read_bytes()) for i in plan.overlay_items],
        Path(pyclosure.__file__), settings.epoch)
    key = key_of(inputs)
    record = state.image_record() or {}
    digest = image_digest(image, record)
    # (A record without owners predates size-report: packed again once to keep them.)
    if (record.get("key") == key and digest is not None and digest == record.get("sha256")
            and "owners" in record):
        say(f"{image.name}: up to date")
        status = "up to date"
    else:
        state.forget_image()
        owners, problems, findings = pack_image(plan, results, state, settings.epoch, image)
        digest = sha256_of(image)
        state.remember_image({"key": key, "sha256": digest, "stat": stamp(image.stat()),
                              "inputs": inputs, "owners": owners, "python_problems": problems,
                              "warnings": [f.as_dict() for f in findings]})
        status = "packed"
    for path, content in ((state.manifest, manifest_json(plan, results, image, digest)),
                          (state.kernel_fragment,
                           fragment_text(plan.kernel_requests).encode())):
        if not path.is_file() or path.read_bytes() != content:
            write_atomically(path, content)
    return ImageResult(image, image.stat().st_size, digest, status, results, state.manifest,
                       time.monotonic() - started)


def image_digest(image: Path, record: dict[str, Any]) -> str | None:
    """The image's sha256: the one recorded when it was packed if the file is as it was
    then, else read again; None if there is no image."""
    if not image.is_file():
        return None
    if record.get("stat") == stamp(image.stat()) and isinstance(record.get("sha256"), str):
        return str(record["sha256"])
    return sha256_of(image)


def pack_image(plan: Plan, results: list[PackageResult], state: OutputDir, epoch: int,
               image: Path) -> tuple[dict[str, str], list[dict[str, object]], list[Finding]]:
    """Lay the staging trees and overlays out, prune the Python library, run the hooks,
    check the tree and pack it; the tree's owners, its Python problems and the warnings.
    (The packing stages are imported here: a run with nothing to pack does without.)"""
    from khib_build.image.cpio import pack_tree
    from khib_build.image.hooks import run_hooks
    from khib_build.image.rootfs import assemble
    from khib_build.python import pythonlib

    owners = assemble([(r.recipe.name, r.staging) for r in results], plan.overlay_items,
                      state.rootfs, private=bool(plan.config.post_build))
    problems = pythonlib.prune(state.rootfs, plan.recipes, state.python_modules) or []
    hook_env = hook_variables(plan.config, state, epoch)
    run_hooks("post_build", plan.config.post_build, state.rootfs, hook_env, state.root,
              state.logs)
    findings = check_tree(plan, state.rootfs, owners, problems)
    say(f"packing {image.name} ({plan.config.compression})")
    pack_tree(state.rootfs, plan.tables, image, plan.config.compression,
              plan.config.compression_level, epoch, plan.config.early_segment)
    run_hooks("post_image", plan.config.post_image, image,
              {**hook_env, "KHIB_IMAGE": str(image)}, state.root, state.logs)
    return owners, problems, findings


def hook_variables(config: ImageConfig, state: OutputDir, epoch: int) -> dict[str, str]:
    """The environment of the config's hooks (image.hooks.HOOK_VARIABLES)."""
    assert config.origin is not None
    return {"KHIB_TARGET_DIR": str(state.rootfs), "KHIB_OUTPUT_DIR": str(state.root),
            "KHIB_CONFIG_DIR": str(config.origin.path.parent), "KHIB_ARCH": config.arch,
            "SOURCE_DATE_EPOCH": str(epoch)}


def check_tree(plan: Plan, root: Path, owners: dict[str, str],
               python_problems: list[dict[str, object]]) -> list[Finding]:
    """Check the assembled tree's ELF files and Python imports: the warnings are said and
    returned; any error stops the build before packing."""
    from khib_build.image.checks import image_checks, tree_view

    found = image_checks(tree_view(root, plan.tables), plan.config, owners, python_problems)
    warnings = [f for f in found if f.severity == "warning"]
    errors = [f for f in found if f.severity == "error"]
    # An import the code guards (try/except ImportError) of a module the interpreter was
    # built without: expected, nothing to act on, but listed for whoever wants to know.
    guarded = [f for f in warnings if f.check == "python" and "(a guarded import)" in f.message]
    if len(warnings) > len(guarded):
        say(f"checks: {len(warnings) - len(guarded)} warning(s) (listed by -v and by lint)")
    if guarded:
        say(f"checks: {len(guarded)} guarded import(s) of modules the image's Python leaves "
            "out, which the code does without (listed by -v and by lint)")
    for finding in warnings:
        detail(f"  {finding.text()}")
    if errors:
        raise KhibError(f"the image fails {len(errors)} check(s); nothing was packed:"
                        + "".join(f"\n  {f.text()}" for f in errors)
                        + "\n(a file the config lists under allow: with a reason only warns)")
    return warnings


def manifest_json(plan: Plan, results: list[PackageResult], image: Path, digest: str) -> bytes:
    config = plan.config
    document = {
        "image": {
            "name": config.name, "version": config.version, "arch": config.arch,
            "file": image.name, "size": image.stat().st_size, "sha256": digest,
            "compression": config.compression,
        },
        "packages": package_entries(results),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def package_entries(results: list[PackageResult]) -> list[dict[str, Any]]:
    """The manifest's packages: a few of each one's facts, and its cache key."""
    entries = []
    for result in results:
        facts = package_facts(result.recipe)
        source = facts["source"] and {k: v for k, v in facts["source"].items() if k != "debian"}
        entries.append({"name": facts["name"], "version": facts["version"],
                        "license": facts["license"], "source": source,
                        "cache_key": result.key})
    return entries
