"""Carry out the package graph: each package is up to date, restored from a cache, or built.

A package's key hashes every input of its build (see :func:`keys.package_inputs`), with
the C library headers its build read (found through the header sets its recipe key has
read before, :func:`keys.package_key`), and the digests of its dependencies' installed
trees, not their keys: a dependency
rebuilt into the same bytes leaves its dependents' keys, and so their cache entries,
valid (early cut-off).  Packages whose dependencies are done start at once, side by
side; builds draw on the run's one job budget (:mod:`jobserver`).  The first failure
cancels the rest of the run.
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khib_build import cancel, report
from khib_build.engine.build import Builder, BuildSettings, Step
from khib_build.engine.jobserver import JobServer
from khib_build.engine.keys import (
    HEADER,
    LibcFiles,
    headers_read,
    key_of,
    package_inputs,
    package_key,
)
from khib_build.engine.reads import watching
from khib_build.engine.sysroot import HEADERS, package_sysroot
from khib_build.report import say
from khib_build.settings.recipes import Recipe

if TYPE_CHECKING:
    from khib_build.engine.remote import RemoteCache


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


# Inputs every package shares: a change to one of them rebuilds everything (or, for the
# C library's headers, every package that read one).
SHARED_INPUTS = ("C library ", "toolchain ", "build machine", "khib-build cache format",
                 "SOURCE_DATE_EPOCH", "arch")


def shared_changes(results: Iterable[PackageResult]) -> tuple[list[str], int]:
    """The shared inputs (C library, toolchain) that changed for the packages built this
    run, and how many packages were built because of them; the C library headers count
    as one cause that names them."""
    found: set[str] = set()
    headers: set[str] = set()
    count = 0
    for result in results:
        lines = [line for line in result.why if line.startswith(SHARED_INPUTS)]
        headers.update(line.split(":")[0].removeprefix(HEADER) for line in lines
                       if line.startswith(HEADER))
        found.update(line for line in lines if not line.startswith(HEADER))
        count += bool(lines)
    if headers:
        shown = sorted(headers)
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        found.add(f"C library headers changed ({', '.join(shown[:3])}{more})")
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
    libc: LibcFiles
    sysroot_base: Path
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
        base = self.inputs(recipe)
        recipe_key = key_of(base)
        staging = self.settings.out.staging(recipe.name)
        cache = self.settings.cache
        # --no-cache builds everything from scratch: no cache, no earlier staging tree.
        forced = recipe.name in self.force or not cache.enabled
        now = None if forced else current(recipe.name, base, self.libc, self.settings)
        if now is not None and now.status == "up to date":
            assert now.key is not None and now.inputs is not None and now.output is not None
            return PackageResult(recipe, now.key, now.output, "up to date", staging,
                                 time.monotonic() - started, now.inputs)
        previous = last_inputs(recipe.name, self.settings)  # (the record goes next)
        self.settings.out.forget(recipe.name)
        found = None if forced else self.restore(recipe, base, recipe_key, staging)
        why: tuple[str, ...] = ()
        steps: tuple[Step, ...] = ()
        if found is None:
            with cache.building(recipe.name, recipe_key):
                if not forced:  # built meanwhile by a run that held the lock
                    found = self.restore(recipe, base, recipe_key, staging, remote=False)
                if found is None:
                    _, expected = package_key(base, self.libc, headers_read(previous or {}))
                    why = tuple(changes(previous, expected))
                    if recipe.name in self.force:
                        why = ("forced (rebuild)",)
                    if self.explain:
                        say(f"{label}: building because " + "; ".join(why))
                    steps, found = self.build(recipe, base, recipe_key, staging, jobserver)
        status, key, inputs, meta = found
        self.settings.out.remember(recipe.name, {"key": key, "output": meta["tree_sha256"],
                                                 "inputs": inputs})
        seconds = time.monotonic() - started
        say(f"{label}: {status} ({seconds:.1f} s)")
        return PackageResult(recipe, key, meta["tree_sha256"], status, staging, seconds,
                             inputs, steps, why)

    def restore(self, recipe: Recipe, base: dict[str, str], recipe_key: str, staging: Path,
                remote: bool = True) -> Found | None:
        """The package from the local cache, else from the remote one: under the key of
        each header set its recipe key read before, with those headers' content now."""
        cache = self.settings.cache
        for key, inputs in candidates(recipe.name, base, self.libc, self.settings):
            if (meta := cache.restore(recipe.name, key, staging)) is not None:
                return "cached", key, inputs, meta
        if not remote or self.remote is None:
            return None
        for headers in self.remote.download_reads(recipe.name, recipe_key):
            key, inputs = package_key(base, self.libc, headers)
            if self.remote.download(recipe.name, key):
                with cache.building(recipe.name, recipe_key):
                    cache.add_read_sets(recipe.name, recipe_key, [headers])
                if (meta := cache.restore(recipe.name, key, staging)) is not None:
                    return "remote", key, inputs, meta
        return None

    def build(self, recipe: Recipe, base: dict[str, str], recipe_key: str, staging: Path,
              jobserver: JobServer) -> tuple[tuple[Step, ...], Found]:
        """Build, watching which C library headers the build reads; store the result under
        the key those headers give."""
        deps = [self.results[d].staging for d in closure(recipe, self.recipes)]
        sysroot = package_sysroot(recipe.name, self.sysroot_base, deps,
                                  self.settings.out.sysroot(recipe.name))
        with jobserver.slot(), watching(sysroot / HEADERS) as reads:
            report.step(recipe.name, recipe.version, "building")
            steps = Builder(recipe, self.settings, staging, sysroot, jobserver).run()
        cancel.check()
        opened = {HEADERS + path for path in reads.paths} if reads.complete else set(
            self.libc.headers)
        headers = sorted(opened & self.libc.headers.keys())
        key, inputs = package_key(base, self.libc, headers)
        report.step(recipe.name, recipe.version, "storing in the build cache")
        started = time.monotonic()
        cache = self.settings.cache
        meta = cache.store(recipe.name, key, staging,
                           {"name": recipe.name, "version": recipe.version, "key": key,
                            "recipe_key": recipe_key, "inputs": inputs},
                           replace=recipe.name in self.force)
        cache.add_read_sets(recipe.name, recipe_key, [headers])
        if self.remote:
            self.remote.upload(recipe.name, key)
            self.remote.upload_reads(recipe.name, recipe_key,
                                     cache.read_sets(recipe.name, recipe_key))
        return (*steps, Step("store", time.monotonic() - started)), \
            ("built", key, inputs, meta)


# How a package was found: its status, key, inputs and cache metadata.
Found = tuple[str, str, dict[str, str], dict[str, Any]]


def survey(recipes: dict[str, Recipe], settings: BuildSettings, toolchain: dict[str, str],
           libc: LibcFiles) -> dict[str, Survey]:
    """Each package's state without building: its key is known once its dependencies'
    outputs are (up to date or cached); otherwise it waits on a stale dependency."""
    found: dict[str, Survey] = {}
    for name, recipe in recipes.items():
        deps = closure(recipe, recipes)
        waiting = next((d for d in deps if found[d].output is None), None)
        if waiting is not None:
            found[name] = Survey("stale", waits_on=waiting)
            continue
        outputs = {d: found[d].output or "" for d in deps}
        base = package_inputs(recipe, settings.config.arch, settings.epoch, toolchain,
                              outputs)
        found[name] = current(name, base, libc, settings)
    return found


def current(name: str, base: dict[str, str], libc: LibcFiles, settings: BuildSettings
            ) -> Survey:
    """Is this package current? The one answer the build, ``status`` and ``explain`` share:
    up to date in the output dir, or in the build cache, under the key of the header set
    its last build read or of one its recipe key read before; else stale (or never built),
    with the inputs its last build's header set gives now."""
    state, cache = settings.out, settings.cache
    record = state.record(name)
    for key, inputs in candidates(name, base, libc, settings):
        if record and record.get("key") == key and state.staging(name).is_dir():
            return Survey("up to date", key, inputs, record["output"])
        if (meta := cache.meta(name, key)) is not None:
            return Survey("cached", key, inputs, meta.get("tree_sha256"))
    previous = last_inputs(name, settings)
    return Survey("never built" if previous is None else "stale",
                  *package_key(base, libc, headers_read(previous or {})))


def last_inputs(name: str, settings: BuildSettings) -> dict[str, str] | None:
    """The inputs of the package's last build: the output dir's, else the cache's newest."""
    record = settings.out.record(name)
    return (record or {}).get("inputs") or settings.cache.latest_inputs(name)


def candidates(name: str, base: dict[str, str], libc: LibcFiles, settings: BuildSettings
               ) -> Iterator[tuple[str, dict[str, str]]]:
    """The keys (and inputs) the package may have now: with the C library headers its
    last build read, then with each header set its recipe key read before."""
    yield package_key(base, libc, headers_read(last_inputs(name, settings) or {}))
    for headers in settings.cache.read_sets(name, key_of(base)):
        yield package_key(base, libc, headers)
