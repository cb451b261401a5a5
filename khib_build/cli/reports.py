"""Verbs that describe an image or check recipes: show-info, legal-info, size-report, lint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from khib_build import report
from khib_build.cli.verbs import FETCH, JSON, PLACES, Verb, arg, shown
from khib_build.errors import UsageError
from khib_build.settings.options import Options, download_dir


def show_info(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import start, survey_image
    from khib_build.reports.info import show_info

    run = start(options)
    found = show_info(run.plan, survey_image(run))
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    image = found["image"]
    print(f"image {image['name']} {image['version']} ({image['arch']}), "
          f"{image['compression']} -> {image['output']}")
    for name, where in found["settings_from"].items():
        if where != "default":
            print(f"  {name:<18} {where}")
    for package in found["packages"]:
        source = package["source"]
        origin = source["urls"][0] if source else package["local_source"]
        print(f"{package['name']:<14} {package['version']:<10} {package['license']:<14} "
              f"{package['cache_status']:<12} {origin}")
    return 0


def legal_info(_args: argparse.Namespace, options: Options) -> int:
    from khib_build.kernel.build import kernel_source
    from khib_build.kernel.patches import kernel_patches, release_series
    from khib_build.pipeline import fetch_sources, image_digest, start
    from khib_build.reports.legal import copyleft, installed_by, write_legal_info
    from khib_build.reports.sbom import KernelLegal
    from khib_build.settings.pins import KernelPin
    from khib_build.sources.debsrc import debian_source

    run = start(options)
    plan, settings = run.plan, run.settings
    given = plan.config.kernel_source
    source = None
    with report.live():
        fetched = fetch_sources(run)
        debian = {r.name: [f for deb in fetched[r.name]
                           for f in debian_source(deb, settings.sources, r.name)]
                  for r in plan.recipes if r.kind == "deb" and copyleft(r)}
        if isinstance(given, KernelPin) or (given is not None and given.exists()):
            source = kernel_source(None, plan.config, settings.cache, settings.sources)
    kernel = None
    if source is not None:
        assert given is not None
        site = given.site if isinstance(given, KernelPin) else installed_by(given)
        patches = kernel_patches(plan.linux, release_series(source.tree),
                                 plan.config.kernel_role)
        kernel = KernelLegal(plan.linux, source.tree, source.archive, source.identity, site,
                             patches)
    image = settings.out.file(plan.config.output)
    documents = write_legal_info(plan, fetched, debian, kernel,
                                 image_digest(image, settings.out.image_record() or {}),
                                 settings.epoch, settings.out.legal_info)
    for document in documents:
        print(f"sbom: {shown(document)}")
    return 0


def size_report(args: argparse.Namespace, options: Options) -> int:
    from khib_build.fsutil import atomic_output
    from khib_build.pipeline import start
    from khib_build.reports.size import breakdown, draw

    run = start(options)
    plan, out = run.plan, run.settings.out
    image = out.file(plan.config.output)
    record = out.image_record()
    if not image.is_file() or record is None:
        raise UsageError(f"no image in {options.outdir}: build it with `khib-build rootfs` "
                         "first")
    found = breakdown(image, record.get("owners", {}), set(plan.tables))
    chart = out.size_chart
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


def lint(args: argparse.Namespace, options: Options) -> int:
    from khib_build.engine.cache import Cache
    from khib_build.engine.outdir import OutputDir
    from khib_build.kernel.build import kernel_source
    from khib_build.pipeline import sources_for
    from khib_build.reports.lint import image_findings, lint_recipe, source_for
    from khib_build.settings.config import load_config
    from khib_build.settings.pins import KernelPin
    from khib_build.settings.recipes import find_recipe, recipe_folders, search_path

    config = load_config(options.config)
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
    dl_dir = download_dir(options, config, os.environ)

    def kernel_tree() -> Path | None:  # unpacked once into the cache, as `kernel` does
        given = config.kernel_source
        at_hand = (dl_dir / given.pinned().filename).is_file() \
            if isinstance(given, KernelPin) else given is not None and given.exists()
        if not at_hand:
            return None
        cache = Cache(options.cache_dir.resolve())
        return kernel_source(None, config, cache, sources_for(config, options, cache)).tree

    findings = []
    for folder in folders:
        findings += lint_recipe(folder,
                                lambda recipe: source_for(recipe, dl_dir, kernel_tree))
    if not args.recipes:
        findings += image_findings(config, OutputDir(options.outdir))
    if args.json:
        print(json.dumps({"recipes": [f.name for f in folders],
                          "findings": [f.as_dict() for f in findings]}, indent=1))
    else:
        for item in findings:
            print(item.text())
        report.say(f"{len(folders)} recipe(s), {len(findings)} finding(s)")
    return 1 if any(f.severity == "error" for f in findings) else 0


VERBS = (
    Verb("show-info", "describe the image and its packages",
         "Every package of the image (version, license, sources and sha256s, patches, "
         "dependencies, cache key and status) and the image's settings. With --json, one "
         "object of the documented schema (docs/show-info.schema.json).", show_info, PLACES,
         (JSON,)),
    Verb("legal-info", "write the SBOMs and collect licenses, patches and sources",
         "Write OUTDIR/legal-info/: sbom.spdx.json (SPDX 2.3) and sbom.cdx.json (CycloneDX "
         "1.6), each with the image, its packages, their Debian packages and the kernel "
         "(versions, declared licenses, sha256s, package URLs) and what depends on what; "
         "manifest.csv, licenses/<pkg>/ (each package's license files), patches/<pkg>/ and "
         "sources/. Fetches the sources it reads license files from.", legal_info,
         FETCH),
    Verb("size-report", "what takes the space in the image",
         "Every entry of the built image with the package that put it there, per-package "
         "totals (uncompressed, and an estimate of each one's share of the compressed "
         "image), and a chart of that beside the image (size-report.svg).", size_report,
         ("config", "outdir"),
         (JSON, arg("--files", action="store_true",
                    help="list every entry, not only totals"))),
    Verb("lint", "check recipes",
         "Check recipes (all on the search path, or those named): schema, a license and "
         "license file, sources pinned, patches listed, named NNNN-*.patch and applying in "
         "order, no unused patch or file. Without names, also the image built in the output "
         "dir: every ELF file of the image's arch, its loader and libraries in the image, "
         "no RPATH outside it; Python imports whose C extension is absent. Exit 1 on "
         "findings other than warnings.", lint,
         ("config", "outdir", "dl_dir", "cache_dir"),
         (JSON, arg("recipes", nargs="*", metavar="RECIPE",
                    help="a recipe name on the search path, or a recipe folder"))),
)
