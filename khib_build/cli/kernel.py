"""Verbs for the kernel an image needs: kconfig, kernel, boot."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from khib_build import report
from khib_build.cli.verbs import FETCH, PINNED, PLACES, Verb, arg, shown, typed
from khib_build.errors import UsageError
from khib_build.settings.config import ARCHES
from khib_build.settings.kinds import Int, Seconds
from khib_build.settings.options import Options

if TYPE_CHECKING:
    from khib_build.kernel.build import KernelResult
    from khib_build.pipeline import Run

KERNEL_SRC = arg("--kernel-src", type=Path, metavar="PATH",
                 help="kernel tree or tarball (default: the config's kernel_source)")


def kconfig(args: argparse.Namespace, options: Options) -> int:
    from khib_build.kernel.build import base_of, kconfig_tools, kernel_source
    from khib_build.kernel.explain import check, report_check
    from khib_build.kernel.kconfig import fragment_requests, image_requests
    from khib_build.pipeline import start

    run = start(options)
    plan, cache = run.plan, run.settings.cache
    arch = args.arch or plan.config.arch
    with report.live():
        source = kernel_source(args.kernel_src, plan.config, cache, run.settings.sources)
    base = args.base or base_of(plan.config)
    if base not in ("tinyconfig", "defconfig"):
        base = str(Path(base).resolve())
    requests = (fragment_requests(args.fragment) if args.fragment
                else image_requests(plan.config, plan.linux, plan.recipes, arch))
    work = run.settings.out.kconfig_work(arch)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "kconfig.log"
    with log.open("w") as handle:
        result = check(source.tree, arch, base, requests, work, handle, args.resolve,
                       kconfig_tools(source, cache))
    for line in report_check(result):
        print(line)
    print(f"{len(requests) - len(result.missing)} of {len(requests)} requested symbols landed "
          f"({Path(base).name}, {arch}); merged config: {work / 'merged' / '.config'}")
    if args.resolve and result.extra:
        print(f"with the proposal: {len(requests) - len(result.extra_missing)} of "
              f"{len(requests)} landed; proposal: {work / 'resolved.config'}")
        return 1 if result.extra_missing else 0
    return 1 if result.missing else 0


def built_kernel(kernel_src: Path | None, run: Run) -> KernelResult:
    """The config's kernel as OUTDIR/bzImage: from the cache, else built."""
    from khib_build.kernel.build import base_of, build_kernel, kernel_source

    plan, settings = run.plan, run.settings
    with report.live():
        source = kernel_source(kernel_src, plan.config, settings.cache, settings.sources)
    return build_kernel(source, plan.linux, plan.config.kernel_role, plan.kernel_requests,
                        base_of(plan.config), plan.config.arch, settings.out.root,
                        settings.cache, settings.jobs, settings.epoch)


def kernel(args: argparse.Namespace, options: Options) -> int:
    from khib_build.pipeline import start

    result = built_kernel(args.kernel_src, start(options))
    print(f"kernel: {shown(result.bzimage)} ({result.status}, {result.seconds:.1f} s)")
    print(f"config: {shown(result.config)}")
    return 0


def boot(args: argparse.Namespace, options: Options) -> int:
    from khib_build.kernel.boot import boot, kernel_cmdline, qemu_command, qemu_for, with_b
    from khib_build.pipeline import start

    run = start(options)
    out = run.settings.out
    image = args.image or out.file(run.plan.config.output)
    bzimage = args.kernel or out.file("bzImage")
    if not bzimage.is_file():
        raise UsageError(f"kernel {bzimage} does not exist: build one with `khib-build "
                         "kernel`, or give --kernel")
    if not image.is_file():
        raise UsageError(f"image {image} does not exist")
    with tempfile.TemporaryDirectory(prefix="khib-boot-") as folder:
        if args.with_b:
            image = with_b(image, bzimage, Path(folder) / "initrd", run.settings.epoch)
        command = qemu_command(qemu_for(bzimage), bzimage, image,
                               kernel_cmdline(args.run, args.append), args.memory,
                               tuple(args.disk), args.cpus)
        if options.verbose:
            print("khib-build boot: " + shlex.join(command), file=sys.stderr)
        result = boot(command, args.expect, args.timeout, echo=not options.quiet)
    if args.expect is not None:
        verdict = "found" if result.found else "NOT found"
        print(f"\nkhib-build boot: {args.expect!r} {verdict} after {result.seconds:.1f} s",
              file=sys.stderr)
        return 0 if result.found else 1
    if not result.exited:
        print(f"\nkhib-build boot: the guest still ran after {args.timeout:g} s and was stopped; "
              "give it a command (--run CMD, which powers it off when done) or a text to wait "
              "for (--expect TEXT)", file=sys.stderr)
    return 0 if result.exited else 1


VERBS = (
    Verb("kconfig", "check the kernel config fragment against a kernel tree",
         "Merge the image's kernel fragment (or the given fragments) into a base config with "
         "the kernel tree's own tools, then report every requested symbol that did not "
         "land, with its unmet dependencies. Exit 1 if any did not land (with --resolve: if "
         "any still does not land with the proposed extra symbols).", kconfig,
         (*PLACES, *PINNED),
         (KERNEL_SRC,
          arg("--arch", choices=tuple(ARCHES), help="target architecture (default: the "
              "config's)"),
          arg("--base", metavar="BASE", help="tinyconfig, defconfig or a config file "
              "(default: the config's kernel_base)"),
          arg("--fragment", type=Path, action="append", default=[], metavar="FILE",
              help="check these fragments instead of the image's (repeatable)"),
          arg("--resolve", action="store_true",
              help="propose the extra symbols that make every request land"))),
    Verb("kernel", "build the kernel the image needs",
         "Build a bzImage for the config's arch from a kernel source (fetched first when "
         "the config pins one), with the linux recipe's backports for its release (and "
         "for kernel_role b, its patches) and the image's fragment merged into the base "
         "config; write OUTDIR/bzImage and OUTDIR/kernel.full.config. Cached like a "
         "package.", kernel, FETCH, (KERNEL_SRC,)),
    Verb("boot", "boot an image in QEMU",
         "Boot an image in QEMU (TCG, serial console). With --expect, exit 0 only if the "
         "text appears on the console.", boot, ("config", "outdir"),
         (arg("--kernel", type=Path, metavar="FILE",
              help="kernel image (default: OUTDIR/bzImage, from khib-build kernel)"),
          arg("--image", type=Path, metavar="FILE",
              help="initramfs (default: OUTDIR/<the config's output>)"),
          arg("--run", metavar="CMD", help="shell command the image runs (khib.run=)"),
          arg("--expect", metavar="TEXT", help="text that must appear on the console"),
          arg("--timeout", type=typed(Seconds()), default=120, metavar="S",
              help="seconds before QEMU is stopped (default: %(default)s)"),
          arg("--memory", type=typed(Int(16)), default=512, metavar="MiB",
              help="guest memory (default: %(default)s)"),
          arg("--cpus", type=typed(Int(1)), default=1, metavar="N",
              help="virtual CPUs (QEMU -smp; default: %(default)s)"),
          arg("--append", default="", metavar="ARGS", help="more kernel arguments"),
          arg("--disk", type=Path, metavar="FILE", action="append", default=[],
              help="a raw disk image, attached as virtio (/dev/vda in the guest; given "
              "again: /dev/vdb, ...)"),
          arg("--with-b", action="store_true",
              help="put the kernel and the image into the guest as /boot/bzImage and "
              "/boot/khib-rootfs.gz, where `khib jump` and `khib hibernate` find the kernel "
              "to jump to (B)"))),
)
