"""The Debian binary package ``khib``, for a system that hibernates with khib: the khib
tools on Debian's python3, the static C core and kexec taken out of the built image,
B's kernel and image, the files ``debian/khib/files`` lists, the documentation, and the
control files; packed by dpkg-deb.

The same inputs give the same bytes: every entry has an explicit mode and the package's
time (SOURCE_DATE_EPOCH, else debian/changelog's date); dpkg-deb gives them to root and
sorts them.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from khib_build import __version__
from khib_build.errors import ConfigError, KhibError
from khib_build.fsutil import make_dirs, read_text
from khib_build.image.checks import ELF_MAGIC, image_view
from khib_build.image.devtable import image_path, number_in, table_lines
from khib_build.settings.config import Arch

NAME = "khib"
DEBIAN_ARCHES = {"x86_64": "amd64", "i386": "i386"}
BIN = "usr/lib/khib/bin"
B = "usr/lib/khib/b"
TOOLS = "usr/lib/khib/python/khib_tools"
# khib-core's other names
CORE_NAMES = ("khib-save", "khib-restore", "khib-report", "khib-jump-back", "khib-other")
STATIC = ("khib-core", "kexec")  # the image's usr/sbin/ programs the package runs on A
SCRIPTS = ("postinst", "postrm")  # debian/khib/<name> as DEBIAN/<name>
OVERRIDES = "lintian-overrides"  # debian/khib/<name>, for the tags that cannot be helped
TRIGGERS = "activate-noawait update-initramfs\n"  # (un)installing rebuilds the initramfs
DEPENDS = "python3 (>= 3.11), initramfs-tools"
DESCRIPTION = """\
hibernation through kexec jump into a kernel of its own
 khib hibernates this system without swap: `systemctl hibernate` runs khib,
 which jumps with kexec into a small kernel and initramfs of its own (B),
 built by khib-build. B writes this system's memory to a partition of its
 own, sealed with a key, and powers off; at the next boot the initramfs finds
 the image, checks it and resumes the system where it stopped.
 .
 The package holds the khib tool, its static C core and kexec, B's kernel and
 image, an initramfs-tools hook and resume script, and systemd drop-ins that
 make `systemctl hibernate` use khib."""


@dataclass(frozen=True)
class Member:
    """One entry of the package's tree: a file (its data) or a symlink (its target)."""

    path: str  # below the root, without the leading slash
    mode: int
    data: bytes = b""
    target: str = ""


@dataclass(frozen=True)
class Package:
    """What the control file says of the package, and its time."""

    version: str
    arch: Arch
    maintainer: str
    homepage: str
    epoch: int  # every entry's mtime, the changelog's and the man page's date

    @property
    def debian_arch(self) -> str:
        return DEBIAN_ARCHES[self.arch.name]

    @property
    def file_name(self) -> str:
        return f"{NAME}_{self.version}_{self.debian_arch}.deb"


def package_for(debian: Path, arch: Arch, epoch: int | None) -> Package:
    """The package for ``arch``: khib-build's version (its own tree makes the package;
    revision 1), debian/control's maintainer and homepage, and ``epoch`` as its time
    (SOURCE_DATE_EPOCH), else debian/changelog's latest date."""
    fields = source_fields(debian / "control")
    return Package(f"{__version__}-1", arch, fields["Maintainer"], fields["Homepage"],
                   changelog_time(debian / "changelog") if epoch is None else epoch)


def own_files(debian: Path) -> tuple[list[Member], dict[str, bytes]]:
    """What ``debian/khib/`` gives: the files its list names with the lintian overrides,
    and the maintainer scripts."""
    folder = debian / NAME
    return [*listed_files(folder), overrides(folder)], scripts(folder)


def source_fields(control: Path) -> dict[str, str]:
    """The fields of a debian/control's first paragraph (the source's), one line each."""
    fields: dict[str, str] = {}
    for line in read_text(control).split("\n\n", 1)[0].splitlines():
        name, colon, value = line.partition(":")
        if colon and not line[:1].isspace():
            fields[name] = value.strip()
    for name in ("Maintainer", "Homepage"):
        if not fields.get(name):
            raise ConfigError(control, None, f"its first paragraph has no {name} field")
    return fields


def listed_files(folder: Path) -> list[Member]:
    """The files ``folder/files`` lists (SOURCE DESTINATION MODE, SOURCE below
    ``folder``), each read; a missing one is an error naming it and the line."""
    members: dict[str, Member] = {}
    for columns, fail, _ in table_lines(folder / "files"):
        if len(columns) != 3:
            raise fail(f"expected SOURCE DESTINATION MODE, got {len(columns)} column(s)")
        source, destination, mode = columns
        path = folder / image_path(source, fail)
        if not path.is_file():
            raise fail(f"{path}: no such file")
        rel = image_path(destination, fail)
        if rel in members:
            raise fail(f"{destination} is listed twice")
        bits = number_in(mode, 8, fail)
        if bits > 0o7777:
            raise fail(f"mode {mode} has more than permission bits")
        members[rel] = Member(rel, bits, path.read_bytes())
    return list(members.values())


def changelog_time(changelog: Path) -> int:
    """The date of a debian/changelog's latest entry, as dpkg-buildpackage takes it for
    SOURCE_DATE_EPOCH."""
    for number, line in enumerate(read_text(changelog).splitlines(), 1):
        if line.startswith(" -- "):
            try:
                return int(parsedate_to_datetime(line.rpartition(">  ")[2]).timestamp())
            except (TypeError, ValueError):
                raise ConfigError(changelog, number, "expected a date after the maintainer, "
                                  "as in ' -- Name <mail>  Tue, 01 Dec 2026 12:00:00 +0000'"
                                  ) from None
    raise ConfigError(changelog, None, "no entry ends with a ' -- ' line")


def overrides(folder: Path) -> Member:
    """The package's lintian overrides."""
    return Member(f"usr/share/lintian/overrides/{NAME}", 0o644,
                  read_text(folder / OVERRIDES).encode())


def scripts(folder: Path) -> dict[str, bytes]:
    """The maintainer scripts in ``folder``, by their name in DEBIAN/."""
    found = {}
    for name in SCRIPTS:
        data = read_text(folder / name).encode()
        if not data.startswith(b"#!/bin/sh\n"):
            raise ConfigError(folder / name, 1, "a maintainer script starts with #!/bin/sh")
        found[name] = data
    return found


def tool_modules(tools: Path) -> list[Member]:
    """The khib tools' modules (``tools/*.py``; no byte code)."""
    modules = sorted(tools.glob("*.py"))
    if not (tools / "cli.py").is_file():
        raise KhibError(f"{tools}: no khib tools here (no cli.py)")
    return [Member(f"{TOOLS}/{path.name}", 0o644, path.read_bytes()) for path in modules]


def static_problem(data: bytes, arch: Arch) -> str | None:
    """Why ``data`` is not a static ELF executable of ``arch``; None if it is."""
    if data[:4] != ELF_MAGIC:
        return "not an ELF file"
    try:
        elf = ELFFile(io.BytesIO(data))
        kind = (elf.elfclass, elf["e_machine"])
        interp = any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
        needed = [t.needed for s in elf.iter_sections() if isinstance(s, DynamicSection)
                  for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    except (ELFError, ValueError, KeyError, IndexError) as exc:
        return f"not a readable ELF file: {exc}"
    if kind != (arch.elf_class, arch.elf_machine):
        return f"built for {kind[0]}-bit {kind[1]}, not {arch.name}"
    if interp or needed:
        return "dynamically linked" + (f" (needs {', '.join(needed)})" if needed else "")
    return None


def core_programs(image: Path, arch: Arch) -> list[Member]:
    """The image's static C core (with its other names) and kexec, for /usr/lib/khib/bin."""
    view = image_view(image)
    members = []
    for name in STATIC:
        read = view.files.get(f"usr/sbin/{name}")
        data = b"" if read is None else read()
        problem = "not a file of the image" if read is None else static_problem(data, arch)
        if problem:
            raise KhibError(f"{image}: /usr/sbin/{name}: {problem}; the package takes a "
                            f"static {arch.name} executable")
        members.append(Member(f"{BIN}/{name}", 0o755, data))
    for name in CORE_NAMES:
        path = f"usr/sbin/{name}"
        if path not in view.links or view.resolve(path) != "usr/sbin/khib-core":
            raise KhibError(f"{image}: /usr/sbin/{name} is not a link to khib-core")
        members.append(Member(f"{BIN}/{name}", 0o777, target="khib-core"))
    return members


def built_files(image: Path, kernel: Path, arch: Arch) -> list[Member]:
    """What the build makes: the image's C core and kexec, B's kernel and image."""
    return [*core_programs(image, arch), Member(f"{B}/bzImage", 0o644, kernel.read_bytes()),
            Member(f"{B}/rootfs.gz", 0o644, image.read_bytes())]


def folders(members: Iterable[Member]) -> list[str]:
    """Every folder the members lie in, parents first."""
    found = {posixpath.dirname(m.path) for m in members}
    for folder in list(found):
        while folder:
            found.add(folder)
            folder = posixpath.dirname(folder)
    return sorted(found - {""})


def control(package: Package, members: Sequence[Member]) -> bytes:
    """DEBIAN/control; Installed-Size as dpkg-gencontrol counts it (KiB per file, rounded
    up; one per folder and symlink)."""
    size = sum((len(m.data) + 1023) // 1024 if not m.target else 1 for m in members)
    size += len(folders(members))
    return (f"Package: {NAME}\nVersion: {package.version}\nArchitecture: "
            f"{package.debian_arch}\nMaintainer: {package.maintainer}\nInstalled-Size: {size}\n"
            f"Depends: {DEPENDS}\nSection: admin\nPriority: optional\nHomepage: "
            f"{package.homepage}\nDescription: {DESCRIPTION}\n").encode()


def control_files(package: Package, members: Sequence[Member], maintainer_scripts:
                  dict[str, bytes]) -> list[Member]:
    """DEBIAN/: control, md5sums (of the files but the conffiles, as dh_md5sums),
    conffiles (every file below /etc), triggers and the maintainer scripts."""
    conffiles = sorted(m.path for m in members if m.path.startswith("etc/") and not m.target)
    sums = "".join(f"{hashlib.md5(m.data).hexdigest()}  {m.path}\n"
                   for m in sorted(members, key=lambda m: m.path)
                   if not m.target and m.path not in conffiles)
    found = [Member("DEBIAN/control", 0o644, control(package, members)),
             Member("DEBIAN/md5sums", 0o644, sums.encode()),
             Member("DEBIAN/triggers", 0o644, TRIGGERS.encode())]
    if conffiles:
        found.append(Member("DEBIAN/conffiles", 0o644,
                            "".join(f"/{path}\n" for path in conffiles).encode()))
    found += [Member(f"DEBIAN/{name}", 0o755, data) for name, data in maintainer_scripts.items()]
    return found


def duplicates(members: Iterable[Member]) -> list[str]:
    return sorted(path for path, count in Counter(m.path for m in members).items()
                  if count > 1)


def write_tree(members: Sequence[Member], root: Path, epoch: int) -> None:
    """The members below ``root``, each with its mode and ``epoch`` as its time."""
    for folder in folders(members):
        make_dirs(root / folder)
    for member in members:
        path = root / member.path
        if member.target:
            os.symlink(member.target, path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(member.data)
            os.chmod(path, member.mode)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    for folder in reversed(folders(members)):
        os.utime(root / folder, (epoch, epoch))


def build_deb(package: Package, members: Sequence[Member], maintainer_scripts:
              dict[str, bytes], outdir: Path) -> Path:
    """``outdir/khib_<version>_<arch>.deb`` holding ``members``, packed by dpkg-deb."""
    twice = duplicates(members)
    if twice:
        raise KhibError(f"the package would hold these paths twice: {', '.join(twice)} "
                        "(debian/khib/files lists a path the build makes)")
    final = outdir / package.file_name
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=outdir) as work:
        root = Path(work) / "root"
        write_tree([*members, *control_files(package, members, maintainer_scripts)], root,
                   package.epoch)
        built = Path(work) / package.file_name
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(package.epoch), "LC_ALL": "C.UTF-8",
               "TZ": "UTC"}
        try:
            packed = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build",
                                     str(root), str(built)], capture_output=True, text=True,
                                    env=env, check=False)
        except FileNotFoundError:
            raise KhibError("dpkg-deb is not installed (apt-get install dpkg)") from None
        if packed.returncode != 0:
            raise KhibError(f"dpkg-deb could not pack {final.name}: "
                            f"{packed.stderr.strip() or packed.stdout.strip()}")
        os.chmod(built, 0o644)
        os.replace(built, final)
    return final
