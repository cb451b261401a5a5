"""The ``khib-build`` command line.

Exit status: 0 success, 1 a build, fetch or boot failure, 2 a bad config, recipe or usage,
130 interrupted.  Errors are one message, never a traceback.

Each handler imports the stages it drives, so a quick verb such as ``pack`` or
``inspect`` does not pay for importing the whole build pipeline.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from khib_build import __version__, report
from khib_build.compress import FORMATS
from khib_build.errors import KhibError, UsageError
from khib_build.paths import data_dir

if TYPE_CHECKING:
    from khib_build.image import Options

DEFAULT_CONFIG = data_dir("configs") / "khib.yaml"


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as khib-build errors (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                        help="image config (default: the built-in configs/khib.yaml)")


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path,
                        help="build cache (default: KHIB_CACHE_DIR or ~/.cache/khib-build/cache)")


def add_outdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--outdir", type=Path, default=Path("output"),
                        help="output dir (default: %(default)s)")


def add_fetch_options(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_outdir(parser)
    parser.add_argument("--dl-dir", type=Path,
                        help="download dir (default: KHIB_DL_DIR, the config's, or the cache's)")
    add_cache_dir(parser)
    parser.add_argument("--no-cache", action="store_true",
                        help="build every package from scratch; neither read nor write cached "
                        "packages")
    parser.add_argument("--offline", action="store_true",
                        help="use only the download dir and file:// mirrors")
    parser.add_argument("--fetch-deadline", type=float, default=300.0, metavar="S",
                        help="seconds one download attempt may take in all (default: 300)")
    parser.add_argument("--fetch-retries", type=int, default=2, metavar="N",
                        help="retries at one origin after a transient failure (default: 2)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="job budget shared by all package builds (default: %(default)s)")


def add_kernel_src(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel-src", type=Path, metavar="PATH",
                        help="kernel tree or tarball (default: the config's kernel_source)")


def add_build_options(parser: argparse.ArgumentParser) -> None:
    add_fetch_options(parser)
    parser.add_argument("--no-wait", action="store_true",
                        help="fail at once if another run holds the output dir, do not wait")
    parser.add_argument("--remote-cache", metavar="URL",
                        default=os.environ.get("KHIB_REMOTE_CACHE") or None,
                        help="shared cache over HTTP GET/PUT (default: KHIB_REMOTE_CACHE)")
    parser.add_argument("--remote-cache-read-only", action="store_true",
                        default=bool(os.environ.get("KHIB_REMOTE_CACHE_READ_ONLY")),
                        help="only read the shared cache (default: KHIB_REMOTE_CACHE_READ_ONLY)")
    parser.add_argument("--remote-timeout", type=float, default=10.0, metavar="S",
                        help="connect/read timeout of the shared cache (default: 10)")
    parser.add_argument("--explain", action="store_true",
                        help="say which inputs changed for each package that is built")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON summary object on standard output")


def options_from(args: argparse.Namespace, force: tuple[str, ...] = ()) -> Options:
    from khib_build.image import Options

    given = vars(args)
    return Options(outdir=args.outdir, dl_dir=given.get("dl_dir"), cache_dir=args.cache_dir,
                   no_cache=given.get("no_cache", False), offline=given.get("offline", False),
                   jobs=given.get("jobs", 1), fetch_deadline=given.get("fetch_deadline", 300.0),
                   fetch_retries=max(0, given.get("fetch_retries", 2)),
                   wait=not given.get("no_wait", False), remote_cache=given.get("remote_cache"),
                   remote_read_only=given.get("remote_cache_read_only", False),
                   remote_timeout=given.get("remote_timeout", 10.0), force=force,
                   explain=given.get("explain", False))


def parse_size(text: str) -> int:
    """Bytes from 500M, 2G, 1.5GiB, 4096 ..."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in units else ""
    try:
        return int(float(number.removesuffix(unit)) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)") from None


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="khib-build", description="Build deterministic initramfs images for "
                 "kexec jump (kexec-based hibernation).")
    top.add_argument("--version", action="version", version=f"khib-build {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print only results and errors")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="also print the commands package builds run")
    verbs = top.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.add_parser = functools.partial(verbs.add_parser, parents=[common])  # type: ignore

    rootfs = verbs.add_parser("rootfs", help="build the image", description="Fetch, build and "
                              "pack the image the config describes; write a manifest beside it.")
    add_build_options(rootfs)
    rootfs.set_defaults(handler=cmd_rootfs)

    rebuild = verbs.add_parser("rebuild", help="rebuild packages regardless of the cache",
                               description="Rebuild the named packages and every package that "
                               "depends on them, replacing their cache entries, then the image.")
    add_build_options(rebuild)
    rebuild.add_argument("packages", nargs="+", metavar="PKG")
    rebuild.set_defaults(handler=cmd_rebuild)

    graph = verbs.add_parser("graph", help="print the package graph",
                             description="Print the image's packages in build order with their "
                             "dependencies and host tools, as text or Graphviz DOT.")
    add_config(graph)
    graph.add_argument("--format", choices=("text", "dot"), default="text")
    graph.set_defaults(handler=cmd_graph)

    status = verbs.add_parser("status", help="list packages as up to date, cached, stale...",
                              description="For each package: up to date (in the output dir), "
                              "cached (in the build cache), stale (built before, inputs changed) "
                              "or never built. Builds nothing.")
    add_config(status)
    add_outdir(status)
    add_cache_dir(status)
    status.add_argument("--json", action="store_true", help="a JSON object per package")
    status.set_defaults(handler=cmd_status)

    explain = verbs.add_parser("explain", help="say why a package would be rebuilt",
                               description="Compare a package's inputs with those of its last "
                               "build in the output dir (else its newest cache entry): each "
                               "changed input with its old and new value.")
    add_config(explain)
    add_outdir(explain)
    add_cache_dir(explain)
    explain.add_argument("package", metavar="PKG")
    explain.set_defaults(handler=cmd_explain)

    cache = verbs.add_parser("cache", help="report on or trim the build cache",
                             description="stats: entries and sizes per package; gc: remove "
                             "least recently used entries until the cache fits --max-size "
                             "(entries a running build holds are kept).")
    cache.add_argument("action", choices=("stats", "gc"))
    add_cache_dir(cache)
    cache.add_argument("--max-size", type=parse_size, metavar="SIZE",
                       help="gc: the size to trim to (e.g. 500M, 2G)")
    cache.add_argument("--json", action="store_true", help="stats: as a JSON object")
    cache.set_defaults(handler=cmd_cache)

    fetch = verbs.add_parser("fetch", help="download and verify sources only",
                             description="Fill the download dir with the verified sources of "
                             "the image's packages (all, or those named).")
    add_fetch_options(fetch)
    fetch.add_argument("--all", action="store_true",
                       help="every recipe on the search path, not only the image's: all a "
                       "later offline build of any image may need")
    fetch.add_argument("packages", nargs="*", metavar="PKG")
    fetch.set_defaults(handler=cmd_fetch)

    show_info = verbs.add_parser(
        "show-info", help="describe the image and its packages",
        description="Every package of the image (version, license, sources and sha256s, "
        "patches, dependencies, cache key and status) and the image's settings. With --json, "
        "one object of the documented schema (docs/show-info.schema.json).")
    add_config(show_info)
    add_outdir(show_info)
    add_cache_dir(show_info)
    show_info.add_argument("--json", action="store_true", help="one JSON object")
    show_info.set_defaults(handler=cmd_show_info)

    legal = verbs.add_parser(
        "legal-info", help="write the SBOM and collect licenses and patches",
        description="Write OUTDIR/legal-info/: sbom.spdx.json (SPDX 2.3: the image, its "
        "packages with versions, declared licenses, download locations and checksums, and "
        "their relationships), licenses/<pkg>/ (each package's license files) and "
        "patches/<pkg>/. Fetches the sources it reads license files from.")
    add_fetch_options(legal)
    legal.set_defaults(handler=cmd_legal_info)

    size = verbs.add_parser(
        "size-report", help="what takes the space in the image",
        description="Every entry of the built image with the package that put it there, "
        "per-package totals (uncompressed, and an estimate of each one's share of the "
        "compressed image), and a chart of that beside the image (size-report.svg).")
    add_config(size)
    add_outdir(size)
    size.add_argument("--json", action="store_true", help="one JSON object")
    size.add_argument("--files", action="store_true", help="list every entry, not only totals")
    size.set_defaults(handler=cmd_size_report)

    lint = verbs.add_parser(
        "lint", help="check recipes",
        description="Check recipes (all on the search path, or those named): schema, a "
        "license and license file, sources pinned, patches listed, named NNNN-*.patch and "
        "applying in order, no unused patch or file. Exit 1 on findings.")
    add_config(lint)
    lint.add_argument("--dl-dir", type=Path,
                      help="download dir holding the sources patches are tried on")
    lint.add_argument("--json", action="store_true", help="one JSON object")
    lint.add_argument("recipes", nargs="*", metavar="RECIPE",
                      help="a recipe name on the search path, or a recipe folder")
    lint.set_defaults(handler=cmd_lint)

    pack = verbs.add_parser("pack", help="pack a directory into an image",
                            description="Pack DIR as a cpio newc image, the way rootfs does.")
    pack.add_argument("directory", type=Path, metavar="DIR")
    pack.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    pack.add_argument("--device-table", type=Path, action="append", default=[],
                      metavar="TABLE", help="device/permission table (repeatable)")
    pack.add_argument("--file-list", type=Path, action="append", default=[], metavar="LIST",
                      help="gen_init_cpio file list (repeatable)")
    pack.add_argument("--compress", choices=tuple(FORMATS), default="gzip")
    pack.add_argument("--level", type=int, metavar="N",
                      help="compression level (default: the format's own)")
    pack.add_argument("--early", type=Path, metavar="DIR",
                      help="folder packed as an uncompressed first segment (early microcode)")
    pack.set_defaults(handler=cmd_pack)

    inspect = verbs.add_parser("inspect", help="list an image's entries",
                               description="List every entry of an image: type and mode, "
                               "uid/gid, size (or device numbers), path, link target.")
    inspect.add_argument("image", type=Path, metavar="FILE")
    inspect.add_argument("--json", action="store_true",
                         help="a JSON array of segments, each with its entries")
    inspect.set_defaults(handler=cmd_inspect)

    extract = verbs.add_parser("extract", help="unpack an image into a folder",
                               description="Unpack every segment of an image into DIR, as the "
                               "kernel would, refusing paths that escape DIR. Device nodes are "
                               "made only when running as root.")
    extract.add_argument("image", type=Path, metavar="FILE")
    extract.add_argument("directory", type=Path, metavar="DIR")
    extract.set_defaults(handler=cmd_extract)

    diff = verbs.add_parser("diff", help="compare two images",
                            description="List entries added (+), removed (-) or changed (~: "
                            "content, mode, owner, link target, device) from image A to B. "
                            "Exit 0 when they hold the same tree, 1 when they differ.")
    diff.add_argument("first", type=Path, metavar="A")
    diff.add_argument("second", type=Path, metavar="B")
    diff.set_defaults(handler=cmd_diff)

    kconfig = verbs.add_parser(
        "kconfig", help="check the kernel config fragment against a kernel tree",
        description="Merge the image's kernel fragment (or the given fragments) into a base "
        "config with the kernel tree's own tools, then report every requested symbol that "
        "did not land, with its unmet dependencies. Exit 1 if any did not land (with "
        "--resolve: if any still does not land with the proposed extra symbols).")
    add_config(kconfig)
    add_kernel_src(kconfig)
    kconfig.add_argument("--arch", choices=("i386", "x86_64"),
                         help="target architecture (default: the config's)")
    kconfig.add_argument("--base", metavar="BASE",
                         help="tinyconfig, defconfig or a config file (default: the config's "
                         "kernel_base)")
    kconfig.add_argument("--fragment", type=Path, action="append", default=[], metavar="FILE",
                         help="check these fragments instead of the image's (repeatable)")
    kconfig.add_argument("--resolve", action="store_true",
                         help="propose the extra symbols that make every request land")
    add_outdir(kconfig)
    add_cache_dir(kconfig)
    kconfig.set_defaults(handler=cmd_kconfig)

    kernel = verbs.add_parser(
        "kernel", help="build the kernel the image needs",
        description="Build a bzImage for the config's arch from a kernel source, with the "
        "linux recipe's patches and the image's fragment merged into the base config; "
        "write OUTDIR/bzImage and OUTDIR/kernel.full.config. Cached like a package.")
    add_config(kernel)
    add_kernel_src(kernel)
    add_outdir(kernel)
    add_cache_dir(kernel)
    kernel.add_argument("--no-cache", action="store_true", help="build even if cached")
    kernel.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel jobs (default: %(default)s)")
    kernel.set_defaults(handler=cmd_kernel)

    boot = verbs.add_parser("boot", help="boot an image in QEMU",
                            description="Boot an image in QEMU (TCG, serial console). With "
                            "--expect, exit 0 only if the text appears on the console.")
    add_config(boot)
    boot.add_argument("--kernel", type=Path, metavar="FILE",
                      help="kernel image (default: output/bzImage, from khib-build kernel)")
    boot.add_argument("--image", type=Path, metavar="FILE",
                      help="initramfs (default: output/<the config's output>)")
    boot.add_argument("--run", metavar="CMD", help="shell command the image runs (khib.run=)")
    boot.add_argument("--expect", metavar="TEXT", help="text that must appear on the console")
    boot.add_argument("--timeout", type=float, default=120, metavar="S")
    boot.add_argument("--memory", type=int, default=512, metavar="MiB")
    boot.add_argument("--cpus", type=int, default=1, metavar="N",
                      help="virtual CPUs (QEMU -smp; default: %(default)s)")
    boot.add_argument("--append", default="", metavar="ARGS", help="more kernel arguments")
    boot.add_argument("--disk", type=Path, metavar="FILE", action="append", default=[],
                      help="a raw disk image, attached as virtio (/dev/vda in the guest; "
                      "given again: /dev/vdb, ...)")
    boot.set_defaults(handler=cmd_boot)
    return top


def shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_rootfs(args: argparse.Namespace, force: tuple[str, ...] = ()) -> int:
    from khib_build.image import build_image, plan_image

    plan = plan_image(args.config)
    unknown = sorted(set(force) - {r.name for r in plan.recipes})
    if unknown:
        raise UsageError(f"not in the image: {', '.join(unknown)}")
    with report.live():
        result = build_image(plan, options_from(args, force))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0
    report.summary(result.packages, result.status, result.seconds)
    print(f"image: {shown(result.path)} ({result.size} bytes, {result.size / 2**20:.2f} MiB)")
    print(f"sha256: {result.sha256}")
    print(f"manifest: {shown(result.manifest)}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    return cmd_rootfs(args, tuple(args.packages))


def cmd_graph(args: argparse.Namespace) -> int:
    from khib_build.graph import as_dot, as_text
    from khib_build.image import plan_image

    plan = plan_image(args.config)
    print(as_dot(plan.recipes, plan.config.name) if args.format == "dot"
          else as_text(plan.recipes), end="")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from khib_build.image import plan_image, survey_image

    plan = plan_image(args.config)
    found = survey_image(plan, options_from(args))
    if args.json:
        print(json.dumps({name: {"status": s.status, "key": s.key, "waits_on": s.waits_on}
                          for name, s in found.items()}, indent=1))
        return 0
    for recipe in plan.recipes:
        state = found[recipe.name]
        detail = f" (waits on {state.waits_on})" if state.waits_on else ""
        print(f"{recipe.name:<20} {recipe.version:<12} {state.status}{detail}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from khib_build.image import explain, plan_image

    plan = plan_image(args.config)
    if args.package not in plan.by_name:
        raise UsageError(f"not in the image: {args.package}")
    for line in explain(plan, options_from(args), args.package):
        print(line)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from khib_build import paths
    from khib_build.cache import Cache

    cache = Cache(paths.cache_dir(args.cache_dir))
    if args.action == "gc":
        if args.max_size is None:
            raise UsageError("cache gc needs --max-size SIZE (e.g. 500M)")
        removed, busy = cache.gc(args.max_size)
        for entry in removed:
            print(f"removed {entry.name} {entry.key[:12]} ({entry.size} bytes)")
        for entry in busy:
            print(f"kept {entry.name} {entry.key[:12]}: held by a running build")
    entries = cache.entries()
    total = sum(e.size for e in entries)
    if args.json:
        per_package: dict[str, dict[str, int]] = {}
        for e in entries:
            row = per_package.setdefault(e.name, {"entries": 0, "bytes": 0})
            row["entries"] += 1
            row["bytes"] += e.size
        print(json.dumps({"root": str(cache.root), "entries": len(entries), "bytes": total,
                          "packages": per_package}, indent=1))
        return 0
    print(f"cache {cache.root}: {len(entries)} entries, {total / 2**20:.1f} MiB")
    if args.action == "stats":
        for e in sorted(entries, key=lambda e: (e.name, -e.last_used)):
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"  {e.name:<20} {e.key[:12]}  {e.size / 2**20:8.2f} MiB  last used {used}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from khib_build.image import fetch_sources, plan_image
    from khib_build.recipes import all_recipes

    plan = plan_image(args.config)
    if args.all and args.packages:
        raise UsageError("give --all or package names, not both")
    recipes = all_recipes(plan.config) if args.all else None
    with report.live():
        paths = fetch_sources(plan, options_from(args), args.packages, recipes)
    for path in paths:
        print(path)
    return 0


def cmd_show_info(args: argparse.Namespace) -> int:
    from khib_build.image import plan_image, survey_image
    from khib_build.info import show_info

    plan = plan_image(args.config)
    found = show_info(plan, survey_image(plan, options_from(args)))
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    image = found["image"]
    print(f"image {image['name']} {image['version']} ({image['arch']}), "
          f"{image['compression']} -> {image['output']}")
    for package in found["packages"]:
        source = package["source"]
        origin = source["urls"][0] if source else package["local_source"]
        print(f"{package['name']:<14} {package['version']:<10} {package['license']:<14} "
              f"{package['cache_status']:<12} {origin}")
    return 0


def cmd_legal_info(args: argparse.Namespace) -> int:
    from khib_build.cpio import source_date_epoch
    from khib_build.fsutil import sha256_of
    from khib_build.image import fetch_sources, plan_image
    from khib_build.legal import write_legal_info

    plan = plan_image(args.config)
    options = options_from(args)
    with_source = [r for r in plan.recipes if r.source]
    with report.live():
        fetched = fetch_sources(plan, options, [r.name for r in with_source])
    tarballs = dict(zip((r.name for r in with_source), fetched, strict=True))
    image = args.outdir / plan.config.output
    document = write_legal_info(plan, tarballs, sha256_of(image) if image.is_file() else None,
                                source_date_epoch(plan.config.source_date_epoch),
                                args.outdir / "legal-info")
    print(f"sbom: {shown(document)}")
    return 0


def cmd_size_report(args: argparse.Namespace) -> int:
    from khib_build.fsutil import atomic_output
    from khib_build.image import plan_image
    from khib_build.sizereport import breakdown, draw
    from khib_build.state import OutputDir

    plan = plan_image(args.config)
    image = args.outdir / plan.config.output
    record = OutputDir(args.outdir.resolve()).image_record()
    if not image.is_file() or record is None:
        raise UsageError(f"no image in {args.outdir}: build it with `khib-build rootfs` first")
    found = breakdown(image, record.get("owners", {}), set(plan.tables))
    chart = image.with_name("size-report.svg")
    with atomic_output(chart) as handle:
        draw(found, handle)
    if not args.files:
        del found["files"]
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for entry in found.get("files", []):
        print(f"{entry['size']:>10} {entry['owner']:<16} {entry['path']}")
    print(f"{'package':<16} {'files':>6} {'uncompressed':>14} {'compressed (est.)':>18}")
    for row in found["packages"]:
        print(f"{row['owner']:<16} {row['files']:>6} {row['size']:>14} {row['compressed']:>18}")
    print(f"{'total':<16} {'':>6} {found['uncompressed_size']:>14} "
          f"{found['compressed_size']:>18}")
    print(f"chart: {shown(chart)}")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from khib_build import paths
    from khib_build.config import load_config
    from khib_build.kernel import kernel_source
    from khib_build.lint import lint_recipe, source_for
    from khib_build.recipes import find_recipe, recipe_folders, search_path

    config = load_config(args.config)
    dirs = search_path(config)
    if args.recipes:
        folders = []
        for name in args.recipes:
            found = Path(name) if Path(name).is_dir() else find_recipe(name, dirs)
            if found is None:
                raise UsageError(f"no recipe {name} on the search path "
                                 f"({', '.join(map(str, dirs))})")
            folders.append(found if found.is_dir() else found.parent)
    else:
        folders = recipe_folders(dirs)
    dl_dir = paths.download_dir(args.dl_dir, config.download_dir)

    def kernel_tree() -> Path | None:  # unpacked once into the cache, as `kernel` does
        if config.kernel_source is None or not config.kernel_source.exists():
            return None
        return kernel_source(None, config, paths.cache_dir()).tree

    findings = []
    for folder in folders:
        findings += lint_recipe(folder,
                                lambda recipe: source_for(recipe, dl_dir, kernel_tree))
    if args.json:
        print(json.dumps({"recipes": [f.name for f in folders],
                          "findings": [f.as_dict() for f in findings]}, indent=1))
    else:
        for item in findings:
            print(item.text())
        report.say(f"{len(folders)} recipe(s), {len(findings)} finding(s)")
    return 1 if findings else 0


def cmd_pack(args: argparse.Namespace) -> int:
    from khib_build.cpio import pack_tree, source_date_epoch
    from khib_build.devtable import merge_tables

    if not args.directory.is_dir():
        raise UsageError(f"{args.directory}: not a directory")
    try:
        FORMATS[args.compress].check_level(args.level)
    except ValueError as exc:
        raise UsageError(f"--level: {exc}") from None
    tables = merge_tables(args.device_table, args.file_list)
    epoch = source_date_epoch(0)
    pack_tree(args.directory, tables, args.output, args.compress, args.level, epoch, args.early)
    print(f"{args.output}: {args.output.stat().st_size} bytes")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from khib_build.listing import read_image

    listings = read_image(args.image)
    if args.json:
        print(json.dumps([listing.as_dict() for listing in listings], indent=1))
        return 0
    for listing in listings:
        if len(listings) > 1:
            print(f"# segment {listing.index}: {listing.compression}, offset {listing.offset}")
        for row in listing.rows:
            print(row.text())
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from khib_build.extract import unpack
    from khib_build.segments import segments

    skipped: list[str] = []

    def on_node(_archive: Path, name: str) -> bool:
        if os.geteuid() == 0:
            return True
        skipped.append(name)
        return False

    for segment in segments(args.image):
        unpack(segment.cpio, args.directory, on_node)
    if skipped:
        report.say(f"not root: {len(skipped)} device node(s) not made, e.g. {skipped[0]}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from khib_build.listing import diff_trees, final_tree, read_image

    changes = diff_trees(final_tree(read_image(args.first)), final_tree(read_image(args.second)))
    for line in changes:
        print(line)
    return 1 if changes else 0


def cmd_kconfig(args: argparse.Namespace) -> int:
    from khib_build import paths
    from khib_build.image import plan_image
    from khib_build.kconfig import fragment_requests, image_requests
    from khib_build.kernel import base_of, check, kernel_source, report_check

    plan = plan_image(args.config)
    arch = args.arch or plan.config.arch
    source = kernel_source(args.kernel_src, plan.config, paths.cache_dir(args.cache_dir))
    base = args.base or base_of(plan.config)
    if base not in ("tinyconfig", "defconfig"):
        base = str(Path(base).resolve())
    requests = (fragment_requests(args.fragment) if args.fragment
                else image_requests(plan.config, plan.linux, plan.recipes, arch))
    work = (args.outdir / f"kconfig-{arch}").resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "kconfig.log"
    with log.open("w") as handle:
        result = check(source.tree, arch, base, requests, work, handle, args.resolve)
    for line in report_check(result):
        print(line)
    print(f"{len(requests) - len(result.missing)} of {len(requests)} requested symbols landed "
          f"({Path(base).name}, {arch}); merged config: {work / 'merged' / '.config'}")
    if args.resolve and result.extra:
        print(f"with the proposal: {len(requests) - len(result.extra_missing)} of "
              f"{len(requests)} landed; proposal: {work / 'resolved.config'}")
        return 1 if result.extra_missing else 0
    return 1 if result.missing else 0


def cmd_kernel(args: argparse.Namespace) -> int:
    from khib_build import paths
    from khib_build.cache import Cache
    from khib_build.cpio import source_date_epoch
    from khib_build.image import plan_image
    from khib_build.kernel import base_of, build_kernel, kernel_source

    plan = plan_image(args.config)
    cache = Cache(paths.cache_dir(args.cache_dir), enabled=not args.no_cache)
    source = kernel_source(args.kernel_src, plan.config, cache.root)
    result = build_kernel(source, plan.linux, plan.kernel_requests, base_of(plan.config),
                          plan.config.arch, args.outdir.resolve(), cache, max(1, args.jobs),
                          source_date_epoch(plan.config.source_date_epoch))
    print(f"kernel: {shown(result.bzimage)} ({result.status}, {result.seconds:.1f} s)")
    print(f"config: {shown(result.config)}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from khib_build import qemu
    from khib_build.image import plan_image

    plan = plan_image(args.config)
    image = args.image or Path("output") / plan.config.output
    kernel = args.kernel or Path("output") / "bzImage"
    if not kernel.is_file():
        raise UsageError(f"kernel {kernel} does not exist: build one with `khib-build kernel`"
                         ", or give --kernel")
    if not image.is_file():
        raise UsageError(f"image {image} does not exist")
    cmdline = qemu.kernel_cmdline(args.run, args.append)
    if args.cpus < 1:
        raise UsageError(f"--cpus {args.cpus}: give at least one CPU")
    command = qemu.qemu_command(qemu.qemu_for(kernel), kernel, image, cmdline, args.memory,
                                tuple(args.disk), args.cpus)
    result = qemu.boot(command, args.expect, args.timeout, echo=not args.quiet)
    if args.expect is not None:
        verdict = "found" if result.found else "NOT found"
        print(f"\nkhib-build boot: {args.expect!r} {verdict} after {result.seconds:.1f} s",
              file=sys.stderr)
        return 0 if result.found else 1
    return 0 if result.exited else 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.verb is None:
            parser().print_help()
            return 2
        report.QUIET, report.VERBOSE = args.quiet, args.verbose
        return args.handler(args)
    except KhibError as exc:
        print(f"khib-build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("khib-build: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"khib-build: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
