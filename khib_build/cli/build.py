"""Verbs that build or look at what a build would do: rootfs, rebuild, deb, fetch,
status, explain, graph, cache."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from khib_build import report
from khib_build.cli.kernel import KERNEL_SRC, built_kernel
from khib_build.cli.verbs import BUILD, CONFIG, FETCH, PLACES, Verb, arg, shown
from khib_build.errors import UsageError
from khib_build.settings.options import Options

if TYPE_CHECKING:
    from khib_build.engine.cache import Entry
    from khib_build.engine.scheduler import PackageResult
    from khib_build.pipeline import ImageResult, Run

TOOLS_RECIPE = "khib-tools"  # the recipe whose Python tools the khib package runs on the host


def summary(packages: Sequence[PackageResult], image_status: str, seconds: float) -> None:
    """The table at the end of a build: each package's status, time and steps."""
    from khib_build.engine.scheduler import shared_changes

    for result in packages:
        steps = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in result.steps)
        report.say(f"  {result.recipe.name:<20} {result.status:<11} {result.seconds:6.1f} s"
                   + (f"  ({steps})" if steps else ""))
    report.say(f"  image: {image_status}; {seconds:.1f} s in all")
    causes, count = shared_changes(packages)
    if causes:  # what made every package rebuild, in one line
        report.say(f"{'; '.join(causes)}: {count} package(s) rebuilt")


def built_image(run: Run, force: tuple[str, ...] = ()) -> ImageResult:
    """The config's image, up to date (``force``: packages built again regardless)."""
    from khib_build.pipeline import build_image

    for used, hidden in run.plan.shadowed:
        report.say(f"warning: {used.parent.name} is defined differently in {used} and "
                   f"{hidden}; using {used} (the first recipe dir wins)")
    with report.live():
        return build_image(run, force)


def rootfs(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import check_names, start

    force = tuple(getattr(args, "packages", ()))
    run = start(options)
    check_names(force, [r.name for r in run.plan.recipes])
    result = built_image(run, force)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0
    summary(result.packages, result.status, result.seconds)
    print(f"image: {shown(result.path)} ({result.size} bytes, {result.size / 2**20:.2f} MiB)")
    print(f"sha256: {result.sha256}")
    print(f"manifest: {shown(result.manifest)}")
    return 0


def deb(args: argparse.Namespace, options: Options) -> int:
    """Read and check the package's own files, build the image and the kernel, pack."""
    from khib_build.fsutil import sha256_of
    from khib_build.image import debpackage
    from khib_build.pipeline import start
    from khib_build.reports.debdocs import documentation
    from khib_build.settings.paths import data_dir

    run = start(options)
    plan = run.plan
    if TOOLS_RECIPE not in plan.by_name:
        raise UsageError(f"{options.config}: the image has no {TOOLS_RECIPE}, whose khib tools the "
                         "khib package runs")
    tools = plan.by_name[TOOLS_RECIPE].folder / "src" / "khib_tools"
    debian = args.debian_dir or data_dir("debian")
    if args.debian_dir is None and not (debian / debpackage.NAME / "files").is_file():
        raise UsageError(f"no {debian / debpackage.NAME / 'files'}: khib-build runs outside "
                         "its source tree; give --debian-dir, the debian/ folder of its source")
    package = debpackage.package_for(debian, plan.config.target, options.source_date_epoch)
    members, scripts = debpackage.own_files(debian)
    members += [*debpackage.tool_modules(tools),
                *documentation(package, tools, debian, plan.recipes, plan.linux)]
    image = built_image(run)
    kernel = built_kernel(args.kernel_src, run)
    members += debpackage.built_files(image.path, kernel.bzimage, plan.config.target)
    path = debpackage.build_deb(package, members, scripts, options.outdir.resolve())
    print(f"image: {shown(image.path)} ({image.status})")
    print(f"kernel: {shown(kernel.bzimage)} ({kernel.status})")
    print(f"package: {shown(path)} ({path.stat().st_size} bytes)")
    print(f"sha256: {sha256_of(path)}")
    return 0


def graph(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import plan_image
    from khib_build.reports.graph import as_dot, as_text

    plan = plan_image(options.config)
    print(as_dot(plan.recipes, plan.config.name) if args.format == "dot"
          else as_text(plan.recipes), end="")
    return 0


def status(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import start, survey_image

    run = start(options)
    found = survey_image(run)
    if args.json:
        print(json.dumps({name: {"status": s.status, "key": s.key, "waits_on": s.waits_on}
                          for name, s in found.items()}, indent=1))
        return 0
    for recipe in run.plan.recipes:
        state = found[recipe.name]
        detail = f" (waits on {state.waits_on})" if state.waits_on else ""
        print(f"{recipe.name:<20} {recipe.version:<12} {state.status}{detail}")
    return 0


def explain(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import check_names, explain, start

    run = start(options)
    check_names([args.package], [r.name for r in run.plan.recipes])
    for line in explain(run, args.package):
        print(line)
    return 0


def cache(args: argparse.Namespace, options: Options) -> int:
    from khib_build.engine.cache import Cache

    store = Cache(options.cache_dir.resolve())
    if args.action == "gc":
        if args.max_size is None:
            raise UsageError("cache gc needs --max-size SIZE (e.g. 500M)")
        removed, busy = store.gc(args.max_size)
        for entry in removed:
            print(f"removed {entry.name} {entry.key[:12]} ({entry.size} bytes)")
        for entry in busy:
            print(f"kept {entry.name} {entry.key[:12]}: held by a running build")
    entries = store.entries()
    total = sum(e.size for e in entries)
    folders = tally(entries, lambda e: e.folder)
    per_package = tally([e for e in entries if e.folder == "packages"], lambda e: e.name)
    if args.json:
        print(json.dumps({"root": str(store.root), "entries": len(entries), "bytes": total,
                          "folders": folders, "packages": per_package}, indent=1))
        return 0
    print(f"cache {store.root}: {len(entries)} entries, {total / 2**20:.1f} MiB")
    for folder, row in folders.items():
        print(f"  {folder + '/':<14} {row['entries']:>4} entries  {row['bytes'] / 2**20:10.1f} MiB")
    if args.action == "stats":
        for e in sorted(entries, key=lambda e: (e.folder, e.name, -e.last_used)):
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"  {e.name:<20} {e.key[:12]:<12}  {e.size / 2**20:8.2f} MiB  last used "
                  f"{used}")
    return 0


def tally(entries: Sequence[Entry], group: Callable[[Entry], str]) -> dict[str, dict[str, int]]:
    """Entries and bytes by group."""
    rows: dict[str, dict[str, int]] = {}
    for entry in entries:
        row = rows.setdefault(group(entry), {"entries": 0, "bytes": 0})
        row["entries"] += 1
        row["bytes"] += entry.size
    return rows


def fetch(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import fetch_sources, start
    from khib_build.settings.recipes import all_recipes

    run = start(options)
    if args.all and args.packages:
        raise UsageError("give --all or package names, not both")
    recipes = all_recipes(run.plan.config) if args.all else None
    with report.live():
        fetched = fetch_sources(run, args.packages, recipes)
    for paths in fetched.values():
        for path in paths:
            print(path)
    return 0


def parse_size(text: str) -> int:
    """Bytes from 500M, 2G, 1.5GiB, 4096 ..."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in units else ""
    try:
        size = float(number.removesuffix(unit)) * units[unit]
    except ValueError:
        size = -1.0
    if not 0 <= size < float("inf"):  # (nan fails both)
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)")
    return int(size)


BUILD_JSON = arg("--json", action="store_true",
                 help="print one JSON summary object on standard output")

VERBS = (
    Verb("rootfs", "build the image", "Fetch, build and pack the image the config describes; "
         "write a manifest beside it.", rootfs, BUILD, (BUILD_JSON,)),
    Verb("rebuild", "rebuild packages regardless of the cache",
         "Rebuild the named packages and every package that depends on them, replacing "
         "their cache entries, then the image.", rootfs, BUILD,
         (BUILD_JSON, arg("packages", nargs="+", metavar="PKG"))),
    Verb("deb", "build the Debian package khib for the system that hibernates",
         "Build the image and B's kernel (as rootfs and kernel do, from the cache when "
         "nothing changed), then OUTDIR/khib_VERSION_ARCH.deb: the khib tools on Debian's "
         "python3, the image's static C core and kexec, B's kernel and image, the files "
         "debian/khib/files lists, khib(8) and the control files.", deb, BUILD,
         (KERNEL_SRC,
          arg("--debian-dir", type=Path, metavar="DIR",
              help="the debian/ folder to take the package's own files (khib/), maintainer "
                   "(control), copyright and date (changelog) from (default: the one of "
                   "khib-build's source tree)"))),
    Verb("graph", "print the package graph", "Print the image's packages in build order with "
         "their dependencies and host tools, as text or Graphviz DOT.", graph, CONFIG,
         (arg("--format", choices=("text", "dot"), default="text"),)),
    Verb("status", "list packages as up to date, cached, stale...",
         "For each package: up to date (in the output dir), cached (in the build cache), "
         "stale (built before, inputs changed) or never built. Builds nothing.", status,
         PLACES, (arg("--json", action="store_true", help="a JSON object per package"),)),
    Verb("explain", "say why a package would be rebuilt",
         "Compare a package's inputs with those of its last build in the output dir (else "
         "its newest cache entry): each changed input with its old and new value.", explain,
         PLACES, (arg("package", metavar="PKG"),)),
    Verb("cache", "report on or trim the build cache",
         "stats: entries and sizes per package; gc: remove least recently used entries until "
         "the cache fits --max-size (entries a running build holds are kept).", cache,
         ("cache_dir",), (arg("action", choices=("stats", "gc")),
                          arg("--max-size", type=parse_size, metavar="SIZE",
                              help="gc: the size to trim to (e.g. 500M, 2G)"),
                          arg("--json", action="store_true", help="stats: as a JSON object"))),
    Verb("fetch", "download and verify sources only",
         "Fill the download dir with the verified sources of the image's packages (all, or "
         "those named).", fetch, FETCH,
         (arg("--all", action="store_true", help="every recipe on the search path, not only "
              "the image's: all a later offline build of any image may need"),
          arg("packages", nargs="*", metavar="PKG"))),
)
