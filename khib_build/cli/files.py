"""Verbs on image files alone: pack, inspect, extract, diff (no config, no build)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from khib_build import report
from khib_build.cli.verbs import Verb, arg, typed
from khib_build.errors import KhibError, UsageError
from khib_build.settings.compression import FORMATS
from khib_build.settings.config import ImageConfig
from khib_build.settings.kinds import Int
from khib_build.settings.options import Options, epoch
from khib_build.settings.schema import settings_of


def pack(args: argparse.Namespace, options: Options) -> int:
    from khib_build.image.cpio import pack_tree
    from khib_build.image.devtable import merge_tables

    if not args.directory.is_dir():
        raise UsageError(f"{args.directory}: not a directory")
    try:
        FORMATS[args.compress].check_level(args.level)
    except ValueError as exc:
        raise UsageError(f"--level: {exc}") from None
    tables = merge_tables(args.device_table, args.file_list)
    pack_tree(args.directory, tables, args.output, args.compress, args.level,
              epoch(options, None), args.early)
    print(f"{args.output}: {args.output.stat().st_size} bytes")
    return 0


def inspect(args: argparse.Namespace, _options: Options) -> int:
    from khib_build.image.listing import read_image

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


def extract(args: argparse.Namespace, _options: Options) -> int:
    from khib_build.image.segments import segments
    from khib_build.sources.extract import unpack

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


def diff(args: argparse.Namespace, _options: Options) -> int:
    """0 the same entries, 1 they differ, 2 trouble (as diff(1))."""
    from khib_build.image.listing import diff_trees, final_tree, read_image

    trees = []
    for image in (args.first, args.second):
        try:  # an image that cannot be read is trouble (exit 2), not a difference
            trees.append(final_tree(read_image(image)))
        except KhibError as exc:
            raise UsageError(f"diff: {exc}") from None
    changes = diff_trees(*trees)
    for line in changes:
        print(line)
    return 1 if changes else 0


COMPRESSION = settings_of(ImageConfig)["compression"]
ON_THE_HOST = ("info", "check", "export")  # what the image's khib does with saved images


def khib_tool(args: argparse.Namespace, options: Options) -> int:
    """The built image's own khib tool, run on the host on saved memory images: its
    Python tools on this Python, its static C core as khib-restore."""
    from khib_build.engine.outdir import OutputDir

    root = OutputDir(options.outdir).rootfs
    core = root / "usr" / "sbin" / "khib-core"
    tools = sorted(root.glob("usr/lib/python3*/site-packages/khib_tools"))
    if not core.is_file() or not tools:
        raise UsageError(f"{root} holds no khib tools: build the image first "
                         "(`khib-build rootfs`)")
    if not args.words or args.words[0] not in ON_THE_HOST:
        raise UsageError(f"on the host, khib does {', '.join(ON_THE_HOST)}: for example "
                         "`khib-build khib info disk.img`")
    with tempfile.TemporaryDirectory(prefix="khib-host-") as folder:
        for name in ("khib-restore", "khib-save"):
            os.symlink(core.resolve(), Path(folder) / name)
        env = {**os.environ, "PYTHONPATH": str(tools[0].parent),
               "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}
        return subprocess.run([sys.executable, "-c", "import sys; from khib_tools.cli import "
                               "main; sys.exit(main())", *args.words], env=env,
                              check=False).returncode

VERBS = (
    Verb("pack", "pack a directory into an image",
         "Pack DIR as a cpio newc image, the way rootfs does.", pack, ("source_date_epoch",),
         arguments=(
             arg("directory", type=Path, metavar="DIR"),
             arg("-o", "--output", type=Path, required=True, metavar="FILE"),
             arg("--device-table", type=Path, action="append", default=[], metavar="TABLE",
                 help="device/permission table (repeatable)"),
             arg("--file-list", type=Path, action="append", default=[], metavar="LIST",
                 help="gen_init_cpio file list (repeatable)"),
             arg("--compress", choices=tuple(FORMATS), default=COMPRESSION.default,
                 help=f"{COMPRESSION.help} (default: %(default)s)"),
             arg("--level", type=typed(Int(0)), metavar="N",
                 help="compression level (default: the format's own)"),
             arg("--early", type=Path, metavar="DIR",
                 help="folder packed as an uncompressed first segment (early microcode)"))),
    Verb("inspect", "list an image's entries",
         "List every entry of an image: type and mode, uid/gid, size (or device numbers), "
         "path, link target.", inspect, arguments=(
             arg("image", type=Path, metavar="FILE"),
             arg("--json", action="store_true",
                 help="a JSON array of segments, each with its entries"))),
    Verb("extract", "unpack an image into a folder",
         "Unpack every segment of an image into DIR, as the kernel would, refusing paths "
         "that escape DIR. Device nodes are made only when running as root.", extract,
         arguments=(arg("image", type=Path, metavar="FILE"),
                    arg("directory", type=Path, metavar="DIR"))),
    Verb("khib", "run the image's khib on saved memory images, on the host",
         "Run the built image's own khib tool on this host: `info IMAGE` describes a saved "
         "memory image (a disk or a file), `check IMAGE [--key FILE]` checks it whole "
         "against its seal, `export IMAGE OUT` writes it as a plain ELF core for crash and "
         "makedumpfile. Uses OUTDIR's image tree (its static C core and Python tools).",
         khib_tool, ("config", "outdir"),
         (arg("words", nargs=argparse.REMAINDER, metavar="VERB ARGS",
              help=f"{' | '.join(ON_THE_HOST)} and their arguments"),)),
    Verb("diff", "compare two images",
         "List entries added (+), removed (-) or changed (~: content, mode, owner, link "
         "target, device) from image A to B. Exit 0 when they hold the same tree, 1 when "
         "they differ.", diff, arguments=(arg("first", type=Path, metavar="A"),
                                          arg("second", type=Path, metavar="B"))),
)
