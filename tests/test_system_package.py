"""The Debian package khib (`khib-build deb`) for the system that hibernates: what it holds
and with which modes, its control files, lintian's verdict, B's kernel and image as
built, the static C core, the man page, the same bytes from any directory, umask, time
zone and locale, and errors that name the file at fault. (tests/test_system.py installs
it into a Debian system.)"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import subprocess
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from khib_build.errors import KhibError
from khib_build.image.debpackage import core_programs, static_problem
from khib_build.settings.config import ARCHES
from tests.conftest import built_once
from tests.helpers import REPO, X86_64_CONFIG, assert_ok, khib

DEBIAN = REPO / "debian"
TOOLS = REPO / "recipes" / "khib-tools" / "src" / "khib_tools"
CORE_NAMES = ("khib-save", "khib-restore", "khib-report", "khib-jump-back", "khib-other")
UTC_ENV = {**os.environ, "TZ": "UTC"}


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The x86_64 package, built once per run (tests/test_system.py takes the same)."""
    folder = built_once(tmp_path_factory, "khib-deb", lambda folder: assert_ok(
        khib("deb", "-c", X86_64_CONFIG, "-o", folder, timeout=3600)))
    return next(folder.glob("khib_*_amd64.deb"))


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's tree, DEBIAN/ included (dpkg-deb -R)."""
    root = tmp_path_factory.mktemp("khib-deb-tree")
    subprocess.run(["dpkg-deb", "-R", deb, root], check=True)
    return root


def listed() -> dict[str, str]:
    """What debian/khib/files installs: each destination and its mode, as ls prints it."""
    found = {}
    for line in (DEBIAN / "khib" / "files").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            found[words[1]] = stat.filemode(stat.S_IFREG | int(words[2], 8))
    return found


def expected() -> dict[str, str]:
    """Every file and symlink the package holds, with its mode."""
    files = {**listed(),
             "/usr/lib/khib/bin/khib-core": "-rwxr-xr-x", "/usr/lib/khib/bin/kexec": "-rwxr-xr-x",
             "/usr/lib/khib/b/bzImage": "-rw-r--r--", "/usr/lib/khib/b/rootfs.gz": "-rw-r--r--",
             "/usr/share/man/man8/khib.8.gz": "-rw-r--r--",
             "/usr/share/doc/khib/copyright": "-rw-r--r--",
             "/usr/share/doc/khib/changelog.Debian.gz": "-rw-r--r--",
             "/usr/share/lintian/overrides/khib": "-rw-r--r--"}
    files |= {f"/usr/lib/khib/bin/{name}": "lrwxrwxrwx" for name in CORE_NAMES}
    files |= {f"/usr/lib/khib/python/khib_tools/{p.name}": "-rw-r--r--"
              for p in TOOLS.glob("*.py")}
    return files


def changelog_date() -> str:
    """debian/changelog's latest date, as dpkg-deb -c prints it in UTC."""
    trailer = next(line for line in (DEBIAN / "changelog").read_text().splitlines()
                   if line.startswith(" -- "))
    when = parsedate_to_datetime(trailer.rpartition(">  ")[2]).astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M")


@pytest.mark.slow
def test_the_package_holds_each_file_with_its_mode_owner_and_time(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                             env=UTC_ENV, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, _, day, time, path, *link = line.split()
        assert owner == "root/root", line
        assert f"{day} {time}" == changelog_date(), line  # no SOURCE_DATE_EPOCH: its date
        if mode.startswith("d"):
            assert mode == "drwxr-xr-x", line
        else:
            entries[path.removeprefix(".")] = mode
            assert link in ([], ["->", "khib-core"]), line
    assert entries == expected()
    assert "__pycache__" not in listing and ".pyc" not in listing


@pytest.mark.slow
def test_the_control_files_say_what_dpkg_needs(deb: Path, unpacked: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True, text=True,
                            check=True).stdout
    for field in ("Package: khib", "Architecture: amd64", "Section: admin",
                  "Priority: optional", "Maintainer: khib-build developers <",
                  "Depends: python3 (>= 3.11), initramfs-tools"):
        assert f"\n{field}" in f"\n{fields}", field
    assert re.search(r"^Version: \d+\.\d+\.\d+-1$", fields, re.M), fields
    assert deb.name == f"khib_{re.search(r'^Version: (.*)$', fields, re.M)[1]}_amd64.deb"
    control = unpacked / "DEBIAN"
    assert (control / "conffiles").read_text() == "/etc/khib.conf\n"
    assert (control / "triggers").read_text() == "activate-noawait update-initramfs\n"
    for script in ("postinst", "postrm"):
        assert (control / script).read_bytes() == (DEBIAN / "khib" / script).read_bytes()
        assert (control / script).stat().st_mode & 0o777 == 0o755
    sums = {path: digest for digest, path in (
        line.split("  ", 1) for line in (control / "md5sums").read_text().splitlines())}
    files = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")
             if p.is_file() and not p.is_symlink() and "DEBIAN" not in p.parts}
    assert set(sums) == files - {"etc/khib.conf"}  # conffiles are dpkg's own to check
    for path, digest in sums.items():
        assert hashlib.md5((unpacked / path).read_bytes()).hexdigest() == digest, path


@pytest.mark.slow
def test_lintian_finds_no_error_or_warning(deb: Path) -> None:
    found = subprocess.run(["lintian", "--fail-on", "error,warning", deb],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0, found.stdout + found.stderr
    assert not re.search(r"^[EW]: ", found.stdout, re.M), found.stdout


@pytest.mark.slow
def test_b_is_the_kernel_and_image_the_verbs_build(unpacked: Path, kernel_x86_64: Path,
                                                   image_x86_64: Path) -> None:
    b = unpacked / "usr" / "lib" / "khib" / "b"
    assert (b / "bzImage").read_bytes() == kernel_x86_64.read_bytes()
    assert (b / "rootfs.gz").read_bytes() == image_x86_64.read_bytes()


@pytest.mark.slow
def test_the_c_core_and_kexec_are_static_x86_64_executables(unpacked: Path) -> None:
    folder = unpacked / "usr" / "lib" / "khib" / "bin"
    for name in ("khib-core", "kexec"):
        with (folder / name).open("rb") as handle:
            elf = ELFFile(handle)
            assert (elf.elfclass, elf["e_machine"], elf["e_type"]) == (64, "EM_X86_64",
                                                                        "ET_EXEC"), name
            assert not any(s["p_type"] in ("PT_INTERP", "PT_DYNAMIC")
                           for s in elf.iter_segments()), name
    for name in CORE_NAMES:
        assert os.readlink(folder / name) == "khib-core"
    core = (folder / "khib-core").read_bytes()
    assert static_problem(core, ARCHES["x86_64"]) is None
    assert static_problem(core, ARCHES["i386"]) == "built for 64-bit EM_X86_64, not i386"


@pytest.mark.slow
def test_the_man_page_renders_with_its_commands_and_files(unpacked: Path) -> None:
    page = unpacked / "usr" / "share" / "man" / "man8" / "khib.8.gz"
    raw = page.read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # gzip -n: no time, no name
    assert gzip.decompress(raw).startswith(b".TH KHIB 8 ")
    shown = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                           env={**UTC_ENV, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}, check=False)
    assert shown.returncode == 0 and not shown.stderr, shown.stderr
    text = " ".join(shown.stdout.split())
    for words in ("KHIB(8)", "systemctl hibernate", "resume script", "FILES",
                  "/etc/khib.conf", "/etc/khib/hibernate.key", "/usr/lib/khib/b/",
                  "khib hibernate [-h]", "khib resume [-h]", "khib info [-h]"):
        assert words in text, words


@pytest.mark.slow
def test_the_same_bytes_from_anywhere_and_again_from_the_cache(deb: Path,
                                                               tmp_path: Path) -> None:
    """Another dir (a relative -o), umask, time zone, locale and terminal width: the same
    package; a second run finds the image up to date and the kernel cached."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TZ"))}
    env = {**base, "TZ": "Asia/Tokyo", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8",
           "COLUMNS": "40"}
    (tmp_path / "elsewhere").mkdir()
    for _ in range(2):
        again = khib("deb", "-c", X86_64_CONFIG, "-o", "out", env=env,
                     cwd=tmp_path / "elsewhere", umask=0o077, timeout=3600)
        assert_ok(again)
    assert "image: out/rootfs.gz (up to date)" in again.stdout
    assert "kernel: out/bzImage (cached)" in again.stdout
    built = tmp_path / "elsewhere" / "out" / deb.name
    assert built.read_bytes() == deb.read_bytes()
    assert built.stat().st_mode & 0o777 == 0o644
    shutil.rmtree(tmp_path / "elsewhere" / "out" / "build", ignore_errors=True)


def test_a_file_the_list_names_and_that_is_missing_is_named(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    shutil.copytree(DEBIAN, debian)
    (debian / "khib" / "khib.conf").unlink()
    lines = (debian / "khib" / "files").read_text().splitlines()
    number, source = next((n, line.split()[0]) for n, line in enumerate(lines, 1)
                          if line.strip() and not line.startswith("#")
                          and not (debian / "khib" / line.split()[0]).is_file())
    result = khib("deb", "-c", X86_64_CONFIG, "-o", tmp_path / "out", "--debian-dir", debian)
    assert result.returncode == 2
    assert result.stderr == (f"khib-build: error: {debian}/khib/files:{number}: "
                             f"{debian}/khib/{source}: no such file\n")
    assert not (tmp_path / "out").exists()  # refused before anything was built


def test_a_dynamic_core_is_refused_naming_it(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "usr" / "sbin"
    tree.mkdir(parents=True)
    shutil.copy("/bin/true", tree / "khib-core")
    shutil.copy("/bin/true", tree / "kexec")
    image = tmp_path / "rootfs.gz"
    assert_ok(khib("pack", tmp_path / "tree", "-o", image))
    with pytest.raises(KhibError) as refused:
        core_programs(image, ARCHES["x86_64"])
    assert str(refused.value) == (f"{image}: /usr/sbin/khib-core: dynamically linked "
                                  "(needs libc.so.6); the package takes a static x86_64 "
                                  "executable")
