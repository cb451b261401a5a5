"""The khib package's documentation: khib(8), written by khib-build's man page generator
from the khib tools' own parser, and /usr/share/doc/khib's copyright and changelog."""

from __future__ import annotations

import argparse
import gzip
import importlib
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from khib_build import __version__
from khib_build.errors import ConfigError, KhibError
from khib_build.fsutil import read_text
from khib_build.image.debpackage import NAME, Member, Package
from khib_build.reports.manual import Page, Section, man_page
from khib_build.settings.recipes import Recipe

DOC = f"usr/share/doc/{NAME}"
HOW = """\
khib hibernates a system without swap. `systemctl hibernate` runs `khib hibernate \
--config /etc/khib.conf` (a drop-in of systemd-hibernate.service, between the hooks of \
/usr/lib/systemd/system-sleep): khib syncs the filesystems, records this system's RAM \
and jumps with kexec into B, a small kernel and initramfs of khib's own \
(/usr/lib/khib/b/), confined to a window of this system's memory. B writes the memory \
to the partition DEVICE names, sealed with KEY, and powers off.

At the next boot, the initramfs's resume script (initramfs-tools, local-premount) looks \
at DEVICE: when it holds an image whose seal the key checks, khib puts the memory back \
and jumps into the saved system, which returns from `systemctl hibernate`; otherwise the \
boot goes on as usual. The initramfs carries /etc/khib.conf and the key: run \
`update-initramfs -u` after changing either.

The other commands run these steps by hand, or read a saved image."""
FILES = (
    ("/etc/khib.conf", "the settings: DEVICE (the partition images go to), KEY, WINDOW "
                       "(B's memory), KERNEL and INITRD (B's), as NAME=value lines"),
    ("/etc/khib/hibernate.key", "the key images are sealed with: 64 random bytes, readable "
                                "by root alone, made at installation when /etc/khib.conf "
                                "names it; removed on purge"),
    ("/usr/lib/khib/b/", "B: bzImage and rootfs.gz, built by khib-build"),
    ("/usr/lib/khib/bin/", "khib's static C core (khib-core, as khib-save, khib-restore, "
                           "khib-report and khib-jump-back) and kexec"),
)
SEE_ALSO = "khib-build(1), systemctl(1), systemd-sleep.conf(5), update-initramfs(8), kexec(8)"


def gzipped(data: bytes) -> bytes:
    """``data`` as gzip -9n compresses it: no name, no time."""
    return gzip.compress(data, 9, mtime=0)


def tool_parser(tools: Path) -> argparse.ArgumentParser:
    """``khib_tools.cli.parser()`` of the tools in ``tools``, imported for this call alone
    (no byte code written beside them; any khib_tools imported before comes back)."""
    def ours() -> dict[str, object]:
        return {n: sys.modules.pop(n) for n in list(sys.modules)
                if n.split(".")[0] == "khib_tools"}

    before, search, bytecode = ours(), list(sys.path), sys.dont_write_bytecode
    sys.path.insert(0, str(tools.parent))
    sys.dont_write_bytecode = True
    try:
        return importlib.import_module("khib_tools.cli").parser()
    except Exception as exc:  # the tools' own code: any failure is theirs
        raise KhibError(f"{tools / 'cli.py'}: cannot take khib's command line from it: "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.path[:] = search
        sys.dont_write_bytecode = bytecode
        ours()
        sys.modules.update(before)  # type: ignore[arg-type]


def manual(tools: Path, package: Package) -> Member:
    """khib(8), gzipped."""
    page = Page(NAME, 8, f"{NAME} {package.version}",
                "hibernate through kexec jump into a kernel of its own", HOW,
                (Section("FILES", items=FILES), Section("SEE ALSO", SEE_ALSO)))
    text = man_page(tool_parser(tools), page, package.epoch)
    return Member(f"usr/share/man/man8/{NAME}.8.gz", 0o644, gzipped(text.encode()))


def copyright_file(source: Path, recipes: Sequence[Recipe], kernel: Recipe) -> Member:
    """khib-build's debian/copyright, its header commented with what the package holds
    of other projects."""
    text = read_text(source)
    header, blank, rest = text.partition("\n\n")
    if not blank or not header.startswith("Format: "):
        raise ConfigError(source, 1, "expected a machine-readable copyright file (Format: "
                          "first, then paragraphs split by blank lines)")
    held = ", ".join(f"{r.name} {r.version} ({r.license})" for r in recipes)
    comment = (f"The package holds builds of other projects' sources as well, each under "
               f"its own license: /usr/lib/khib/b/rootfs.gz (B's image) holds {held}; "
               f"/usr/lib/khib/bin/ holds khib-core and kexec out of it; "
               f"/usr/lib/khib/b/bzImage is Linux {kernel.version} ({kernel.license}). "
               "`khib-build legal-info` gives their sources and license texts.")
    wrapped = textwrap.fill(comment, 79, initial_indent="Comment: ", subsequent_indent=" ",
                            break_on_hyphens=False)
    return Member(f"{DOC}/copyright", 0o644, f"{header}\n{wrapped}\n\n{rest}".encode())


def changelog(package: Package) -> Member:
    """changelog.Debian.gz: one entry, dated by the package's time."""
    entry = textwrap.fill(f"The khib tools, C core and kexec of khib-build {__version__}, "
                          f"with B's kernel and image built for {package.arch.name}.", 78,
                          initial_indent="  * ", subsequent_indent="    ")
    date = format_datetime(datetime.fromtimestamp(package.epoch, UTC))
    text = (f"{NAME} ({package.version}) unstable; urgency=medium\n\n{entry}\n\n"
            f" -- {package.maintainer}  {date}\n")
    return Member(f"{DOC}/changelog.Debian.gz", 0o644, gzipped(text.encode()))


def documentation(package: Package, tools: Path, debian: Path, recipes: Sequence[Recipe],
                  kernel: Recipe) -> list[Member]:
    """khib(8), the copyright (from ``debian/copyright``) and the changelog."""
    return [manual(tools, package), copyright_file(debian / "copyright", recipes, kernel),
            changelog(package)]
