"""khib: jump to another kernel and back, read and write its memory, hibernate, resume.

In the original kernel A, ``khib jump`` records A's RAM ranges, hands them to B in a
small cpio segment appended to B's initrd, confines B to a window of memory, loads B
with ``kexec --load-preserve-context`` and jumps; once B is back, ``khib other-core`` and
``khib other-poke`` read and write B's memory, ``khib jump --again`` enters B where it
left off and ``khib jump --unload`` ends it; ``khib hibernate`` does the same, and B
saves A to a disk and powers off. In B, ``khib save`` writes A's memory to a disk,
``khib restore`` writes an image back, and ``khib back`` returns to A. A later boot with
``khib.resume=DEV`` runs ``khib resume``, which puts A back and jumps into it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from khib_tools import config, hibernate, jumping, other, resume, saving, window
from khib_tools.image import NoImage, read_image
from khib_tools.jumping import Failure


def described(key: str, value: object) -> str:
    """One thing an image records, as text."""
    if key == "kernel" and isinstance(value, dict):
        build = f" (build id {value['build_id']})" if value.get("build_id") else ""
        return f"Linux {value.get('release', '?')} {value.get('version', '')}{build}"
    if key == "ranges" and isinstance(value, list):
        return f"{len(value)} ranges, {sum(b - a + 1 for a, b in value) >> 20} MiB"
    if key == "window" and isinstance(value, list) and len(value) == 2:
        return f"{value[0] >> 20}M:{value[1] >> 20}M"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def info(args: argparse.Namespace) -> int:
    """A saved image in a few lines: its memory, data, zero and free pages, what it
    records; with --segments, every segment and its checksum."""
    try:
        image = read_image(args.image)
    except NoImage as exc:
        raise Failure(f"{args.image}: {exc}") from exc
    pages = {kind: sum(s.memsz for s in image.segments if s.kind == kind) >> 12
             for kind in ("data", "zero", "free")}
    total = sum(s.memsz for s in image.segments)
    stored = sum(s.filesz for s in image.segments)
    ratio = f" ({stored / (pages['data'] << 12):.2f} of it)" if pages["data"] else ""
    print(f"{args.image}: {len(image.segments)} segments, {total >> 20} MiB of memory, "
          f"{pages['data'] >> 8} MiB of data stored in {stored >> 20} MiB{ratio}, "
          f"{pages['zero']} zero pages, {pages['free']} free pages"
          f"{', keyed' if image.keyed else ''}{', with VMCOREINFO' if image.vmcoreinfo else ''}")
    if image.layout.free_counted:
        print(f"  free pages: {image.layout.free_recorded} recorded; the walk found "
              f"{image.layout.free_counted}, A counted {image.layout.kernel_count}")
    for key, value in sorted(image.meta.items()):
        print(f"  {key}: {described(key, value)}")
    if args.segments:
        for s in image.segments:
            print(f"  {s.paddr:#012x}-{s.paddr + s.memsz - 1:#012x} {s.kind} {s.memsz:>12} "
                  f"{s.filesz:>12} crc32={s.crc32:08x}")
    return 0


def window_arg(text: str) -> tuple[int, int]:
    try:
        return window.parse(text)
    except window.WindowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def jump_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", help="the kernel to jump to, B (default: "
                   f"{jumping.B_KERNEL}, where `khib-build boot --with-b` puts it)")
    p.add_argument("--initrd", help=f"its initrd, a khib image (default: {jumping.B_INITRD})")
    p.add_argument("--window", type=window_arg,
                   help="START:SIZE of A's memory B runs in, in whole MiB, at 16M or above, "
                        "inside one System RAM range (default: 64 MiB at 256M, or at 128M, "
                        "64M, 32M or 16M where A's RAM ends sooner)")
    p.add_argument("--deadline", type=int, metavar="S",
                   help="B returns to A if its command runs longer (default: "
                        f"{jumping.DEADLINE}; not with --again: B keeps the one it started with)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="khib", description=__doc__.split("\n")[0])
    verbs = top.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("jump", help="jump to another kernel, preserving this one")
    jump_options(p)
    p.add_argument("--b-run", help="a command B runs (khib.run=) instead of a shell; with "
                   "--again, instead of the one it was started with")
    entered = p.add_mutually_exclusive_group()
    entered.add_argument("--again", action="store_true",
                         help="enter the B that jumped back again, where it left off")
    entered.add_argument("--unload", action="store_true",
                         help="unload the B that jumped back: its memory is this kernel's again")
    p.set_defaults(handler=jumping.jump)
    p = verbs.add_parser("other-core", help="after a jump: write B's memory as an ELF core "
                         "(crash, gdb, makedumpfile)")
    p.add_argument("output")
    p.set_defaults(handler=other.core)
    p = verbs.add_parser("other-poke", help="after a jump: write FILE's bytes into B's memory "
                         "at the physical address PHYS (before khib jump --again)")
    p.add_argument("phys", type=lambda text: int(text, 0))
    p.add_argument("file")
    p.set_defaults(handler=other.poke)
    p = verbs.add_parser("hibernate", help="save this kernel to a disk (through B) and "
                         "power off; returns once resumed")
    jump_options(p)
    p.add_argument("--device", help="the disk or partition to save to (its whole size)")
    p.add_argument("--key", help="seal the image with this key (HMAC-SHA256; 16 to 2040 "
                   "bytes, on a disk, not tmpfs); the resume boot checks it with "
                   f"{resume.RESUME_KEY} of its initramfs or khib.key=")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="take DEVICE, KEY, WINDOW, KERNEL and INITRD from this file where "
                        "not given (the Debian package's /etc/khib.conf)")
    p.set_defaults(handler=hibernate.hibernate)
    verbs.add_parser("back", help="in B: jump back to the original kernel").set_defaults(
        handler=jumping.back)
    p = verbs.add_parser("save", help="in B: write A's memory to a file or disk")
    p.add_argument("dest")
    p.add_argument("--keep-free-pages", action="store_true",
                   help="store the pages A had free too")
    p.add_argument("--key", help="seal the image with this key (HMAC-SHA256)")
    p.set_defaults(handler=saving.save)
    p = verbs.add_parser("b-hibernate", help="in B (khib hibernate runs it): save A to the "
                         "device, power off")
    p.add_argument("device")
    p.set_defaults(handler=hibernate.b_hibernate)
    p = verbs.add_parser("restore", help="in B: write a saved image back into A's memory")
    p.add_argument("image")
    p.add_argument("--verify", action="store_true", help="only compare")
    p.add_argument("--key", help="refuse an image this key did not seal")
    p.set_defaults(handler=saving.restore)
    p = verbs.add_parser("check", help="check a saved image whole against its seal")
    p.add_argument("image")
    p.add_argument("--key", help="refuse an image this key did not seal")
    p.set_defaults(handler=saving.check)
    p = verbs.add_parser("export", help="write a saved image as a plain ELF core (crash, "
                         "makedumpfile)")
    p.add_argument("image")
    p.add_argument("output")
    p.add_argument("--key", help="refuse an image this key did not seal")
    p.set_defaults(handler=saving.export)
    p = verbs.add_parser("resume", help="at boot (khib.resume=DEV): resume A from DEV")
    p.add_argument("device")
    p.add_argument("--boot", action="store_true",
                   help="as a distribution's initramfs runs it at every boot: no image, "
                        "no word, and a refusal goes on with the normal boot")
    p.set_defaults(handler=lambda args: resume.resume(args.device, args.boot))
    p = verbs.add_parser("info", help="describe a saved image")
    p.add_argument("image")
    p.add_argument("--segments", action="store_true",
                   help="list every segment: its memory, kind, stored size and CRC-32")
    p.set_defaults(handler=info)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = int(args.handler(args))
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader left early (khib info | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except config.ConfigError as exc:
        print(f"khib: {exc}", file=sys.stderr)
        return 2
    except resume.GoBack as exc:
        print(f"khib: {exc}", file=sys.stderr)
        return resume.GO_BACK
    except (Failure, other.Unavailable, *resume.BROKEN) as exc:
        print(f"khib: {exc}", file=sys.stderr)
        return 1
