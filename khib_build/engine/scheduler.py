"""Carry out the package graph: each package is up to date, restored from a cache, or built.

A package's key hashes every input of its build (see :func:`keys.package_inputs`),
including the digests of its dependencies' installed trees, not their keys: a dependency
rebuilt into the same bytes leaves its dependents' keys, and so their cache entries,
valid (early cut-off).  Packages whose dependencies are done start at once, side by
side; builds draw on the run's one job budget (:mod:`jobserver`).  The first failure
cancels the rest of the run.
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from khib_build import cancel, report
from khib_build.engine.build import Builder, BuildSettings, Step
from khib_build.engine.jobserver import JobServer
from khib_build.engine.keys import key_of, package_inputs
from khib_build.engine.outdir import OutputDir
from khib_build.engine.remote import RemoteCache
from khib_build.engine.sysroot import package_sysroot
from khib_build.report import say
from khib_build.settings.recipes import Recipe


@dataclass(frozen=True)
class PackageResult:
    recipe: Recipe
    key: str
    output: str  # digest of the installed tree
    status: str  # "up to date", "cached", "remote", "built"
    staging: Path
    seconds: float
    inputs: dict[str, str]
    steps: tuple[Step, ...] = ()
    why: tuple[str, ...] = ()  # for a build: what changed since the last one

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.recipe.name, "version": self.recipe.version, "status": self.status,
            "key": self.key, "output_sha256": self.output, "seconds": round(self.seconds, 3),
            "steps": [{"step": s.name, "seconds": round(s.seconds, 3)} for s in self.steps],
            "why": list(self.why),
        }


@dataclass(frozen=True)
class Survey:
    """What a package's state is, found without building anything."""

    status: str  # "up to date", "cached", "stale", "never built"
    key: str | None = None
    inputs: dict[str, str] | None = None
    output: str | None = None
    waits_on: str | None = None  # a stale dependency whose output decides this key


def closure(recipe: Recipe, recipes: dict[str, Recipe]) -> list[str]:
    """Every package ``recipe`` depends on, directly or not, in build order."""
    seen: dict[str, None] = {}

    def visit(name: str) -> None:
        for dep in recipes[name].depends:
            if dep not in seen:
                visit(dep)
                seen[dep] = None

    visit(recipe.name)
    return list(seen)


def dependents(names: Iterable[str], recipes: dict[str, Recipe]) -> set[str]:
    """The named packages and every package that depends on them, directly or not."""
    found = set(names)
    changed = True
    while changed:
        changed = False
        for recipe in recipes.values():
            if recipe.name not in found and found.intersection(recipe.depends):
                found.add(recipe.name)
                changed = True
    return found


def changes(old: dict[str, str] | None, new: dict[str, str]) -> list[str]:
    """Each input that differs, with its old and new value."""
    if old is None:
        return ["never built before"]
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before != after:
            lines.append(f"{name}: {short(before)} -> {short(after)}")
    return lines or ["no input changed"]


# Inputs every package shares: a change to one of them rebuilds everything.
SHARED_INPUTS = ("C library ", "toolchain ", "build machine", "khib-build cache format",
                 "SOURCE_DATE_EPOCH", "arch")


def shared_changes(results: Iterable[PackageResult]) -> tuple[list[str], int]:
    """The shared inputs (C library, toolchain) that changed for the packages built this
    run, and how many packages were built because of them."""
    found: set[str] = set()
    count = 0
    for result in results:
        lines = [line for line in result.why if line.startswith(SHARED_INPUTS)]
        found.update(lines)
        count += bool(lines)
    return sorted(found), count


def short(value: str | None) -> str:
    if value is None:
        return "(none)"
    return value[:16] if len(value) == 64 and value.isalnum() else repr(value)


@dataclass
class Engine:
    recipes: dict[str, Recipe]
    settings: BuildSettings
    toolchain: dict[str, str]
    sysroot_base: Path
    state: OutputDir
    remote: RemoteCache | None = None
    force: set[str] = field(default_factory=set)
    explain: bool = False
    results: dict[str, PackageResult] = field(default_factory=dict)

    def run(self) -> dict[str, PackageResult]:
        """Every package, dependencies first, independent ones in parallel."""
        sorter = graphlib.TopologicalSorter({n: r.depends for n, r in self.recipes.items()})
        sorter.prepare()
        cancel.STOP.clear()
        jobserver = JobServer(self.settings.jobs)
        pool = ThreadPoolExecutor(max_workers=max(1, self.settings.jobs))
        running: dict[Future[PackageResult], str] = {}
        try:
            with report.counting(len(self.recipes)):
                while sorter.is_active():
                    for name in sorted(sorter.get_ready()):
                        running[pool.submit(self.package, self.recipes[name], jobserver)] = name
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=lambda f: running[f]):
                        name = running.pop(future)
                        self.results[name] = future.result()
                        sorter.done(name)
                        report.done(name)
        except BaseException:
            cancel.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            jobserver.close()
        return {name: self.results[name] for name in self.recipes}

    def inputs(self, recipe: Recipe) -> dict[str, str]:
        outputs = {d: self.results[d].output for d in closure(recipe, self.recipes)}
        return package_inputs(recipe, self.settings.config.arch, self.settings.epoch,
                              self.toolchain, outputs)

    def package(self, recipe: Recipe, jobserver: JobServer) -> PackageResult:
        """Bring one package's staging tree up to date; say how."""
        started = time.monotonic()
        label = f"{recipe.name} {recipe.version}"
        inputs = self.inputs(recipe)
        key = key_of(inputs)
        staging = self.settings.out.staging(recipe.name)
        # --no-cache builds everything from scratch: no cache, no earlier staging tree.
        forced = recipe.name in self.force or not self.settings.cache.enabled
        record = self.state.record(recipe.name)
        if not forced and record and record.get("key") == key and staging.is_dir():
            return PackageResult(recipe, key, record["output"], "up to date", staging,
                                 time.monotonic() - started, inputs)
        self.state.forget(recipe.name)
        status, meta = "cached", None
        if not forced:
            meta = self.settings.cache.restore(recipe.name, key, staging)
            if meta is None and self.remote and self.remote.download(recipe.name, key):
                status, meta = "remote", self.settings.cache.restore(recipe.name, key, staging)
        why: tuple[str, ...] = ()
        steps: tuple[Step, ...] = ()
        if meta is None:
            with self.settings.cache.building(recipe.name, key):
                if not forced:  # built meanwhile by a run that held the lock
                    meta = self.settings.cache.restore(recipe.name, key, staging)
                if meta is None:
                    previous = (record or {}).get("inputs") or \
                        self.settings.cache.latest_inputs(recipe.name)
                    why = tuple(changes(previous, inputs))
                    if recipe.name in self.force:
                        why = ("forced (rebuild)",)
                    if self.explain:
                        say(f"{label}: building because " + "; ".join(why))
                    status, steps, meta = "built", *self.build(recipe, key, inputs, staging,
                                                               jobserver)
        self.state.remember(recipe.name, {"key": key, "output": meta["tree_sha256"],
                                          "inputs": inputs})
        seconds = time.monotonic() - started
        say(f"{label}: {status} ({seconds:.1f} s)")
        return PackageResult(recipe, key, meta["tree_sha256"], status, staging, seconds,
                             inputs, steps, why)

    def build(self, recipe: Recipe, key: str, inputs: dict[str, str], staging: Path,
              jobserver: JobServer) -> tuple[tuple[Step, ...], dict[str, Any]]:
        deps = [self.results[d].staging for d in closure(recipe, self.recipes)]
        sysroot = package_sysroot(recipe.name, self.sysroot_base, deps,
                                  self.settings.out.sysroot(recipe.name))
        with jobserver.slot():
            report.step(recipe.name, recipe.version, "building")
            steps = Builder(recipe, self.settings, staging, sysroot, jobserver).run()
        cancel.check()
        report.step(recipe.name, recipe.version, "storing in the build cache")
        started = time.monotonic()
        meta = self.settings.cache.store(
            recipe.name, key, staging, {"name": recipe.name, "version": recipe.version,
                                        "key": key, "inputs": inputs},
            replace=recipe.name in self.force)
        if self.remote:
            self.remote.upload(recipe.name, key)
        return (*steps, Step("store", time.monotonic() - started)), meta


def survey(recipes: dict[str, Recipe], settings: BuildSettings, toolchain: dict[str, str],
           state: OutputDir) -> dict[str, Survey]:
    """Each package's state without building: its key is known once its dependencies'
    outputs are (up to date or cached); otherwise it waits on a stale one."""
    found: dict[str, Survey] = {}
    for name, recipe in recipes.items():
        deps = closure(recipe, recipes)
        waiting = next((d for d in deps if found[d].output is None), None)
        if waiting is not None:
            found[name] = Survey("stale", waits_on=waiting)
            continue
        outputs = {d: found[d].output or "" for d in deps}
        inputs = package_inputs(recipe, settings.config.arch, settings.epoch, toolchain,
                                outputs)
        key = key_of(inputs)
        record = state.record(name)
        staging = settings.out.staging(name)
        if record and record.get("key") == key and staging.is_dir():
            found[name] = Survey("up to date", key, inputs, record["output"])
        elif (meta := settings.cache.meta(name, key)) is not None:
            found[name] = Survey("cached", key, inputs, meta.get("tree_sha256"))
        elif record or settings.cache.latest_inputs(name) is not None:
            found[name] = Survey("stale", key, inputs)
        else:
            found[name] = Survey("never built", key, inputs)
    return found
