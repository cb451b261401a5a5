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
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from khib_build import __version__, report
from khib_build.compress import FORMATS
from khib_build.errors import KhibError, UsageError

if TYPE_CHECKING:
    from khib_build.image import Options

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "khib.yaml"


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as khib-build errors (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                        help="image config (default: %(default)s)")


def add_build_options(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument("-o", "--outdir", type=Path, default=Path("output"),
                        help="output dir (default: %(default)s)")
    parser.add_argument("--dl-dir", type=Path,
                        help="download dir (default: KHIB_DL_DIR, the config's, or the cache's)")
    parser.add_argument("--cache-dir", type=Path,
                        help="build cache (default: KHIB_CACHE_DIR or ~/.cache/khib-build/cache)")
    parser.add_argument("--no-cache", action="store_true",
                        help="build every package from scratch; neither read nor write the cache")
    parser.add_argument("--offline", action="store_true",
                        help="use only the download dir and file:// mirrors")
    parser.add_argument("--fetch-deadline", type=float, default=300.0, metavar="S",
                        help="seconds one download attempt may take in all (default: 300)")
    parser.add_argument("--fetch-retries", type=int, default=2, metavar="N",
                        help="retries at one origin after a transient failure (default: 2)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel jobs (default: %(default)s)")


def options_from(args: argparse.Namespace) -> Options:
    from khib_build.image import Options

    return Options(outdir=args.outdir, dl_dir=args.dl_dir, cache_dir=args.cache_dir,
                   no_cache=args.no_cache, offline=args.offline, jobs=args.jobs,
                   fetch_deadline=args.fetch_deadline, fetch_retries=max(0, args.fetch_retries))


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="khib-build", description="Build deterministic initramfs images for "
                 "kexec jump (kexec-based hibernation).")
    top.add_argument("--version", action="version", version=f"khib-build {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print only results and errors")
    verbs = top.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.add_parser = functools.partial(verbs.add_parser, parents=[common])  # type: ignore

    rootfs = verbs.add_parser("rootfs", help="build the image", description="Fetch, build and "
                              "pack the image the config describes; write a manifest beside it.")
    add_build_options(rootfs)
    rootfs.set_defaults(handler=cmd_rootfs)

    fetch = verbs.add_parser("fetch", help="download and verify sources only",
                             description="Fill the download dir with the verified sources of "
                             "the image's packages (all, or those named).")
    add_build_options(fetch)
    fetch.add_argument("packages", nargs="*", metavar="PKG")
    fetch.set_defaults(handler=cmd_fetch)

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

    boot = verbs.add_parser("boot", help="boot an image in QEMU",
                            description="Boot an image in QEMU (TCG, serial console). With "
                            "--expect, exit 0 only if the text appears on the console.")
    add_config(boot)
    boot.add_argument("--kernel", type=Path, required=True, metavar="FILE",
                      help="kernel image (bzImage) to boot")
    boot.add_argument("--image", type=Path, metavar="FILE",
                      help="initramfs (default: output/<the config's output>)")
    boot.add_argument("--run", metavar="CMD", help="shell command the image runs (khib.run=)")
    boot.add_argument("--expect", metavar="TEXT", help="text that must appear on the console")
    boot.add_argument("--timeout", type=float, default=120, metavar="S")
    boot.add_argument("--memory", type=int, default=512, metavar="MiB")
    boot.add_argument("--append", default="", metavar="ARGS", help="more kernel arguments")
    boot.set_defaults(handler=cmd_boot)
    return top


def shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_rootfs(args: argparse.Namespace) -> int:
    from khib_build.image import build_image, plan_image

    plan = plan_image(args.config)
    result = build_image(plan, options_from(args))
    print(f"image: {shown(result.path)} ({result.size} bytes, {result.size / 2**20:.2f} MiB)")
    print(f"sha256: {result.sha256}")
    print(f"manifest: {shown(result.manifest)}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from khib_build.image import fetch_sources, plan_image

    plan = plan_image(args.config)
    for path in fetch_sources(plan, options_from(args), args.packages):
        print(path)
    return 0


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


def cmd_boot(args: argparse.Namespace) -> int:
    from khib_build import qemu
    from khib_build.config import ARCHES
    from khib_build.image import plan_image

    plan = plan_image(args.config)
    image = args.image or Path("output") / plan.config.output
    for what, path in (("kernel", args.kernel), ("image", image)):
        if not path.is_file():
            raise UsageError(f"{what} {path} does not exist")
    cmdline = qemu.kernel_cmdline(args.run, args.append)
    command = qemu.qemu_command(ARCHES[plan.config.arch].qemu, args.kernel, image, cmdline,
                                args.memory)
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
        report.QUIET = args.quiet
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
