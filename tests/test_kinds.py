"""Package kinds: make and autotools fill in the toolchain; deb unpacks Debian packages."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import assert_ok, khib, write_recipe

I386 = {"arch": "i386", "toolchain": {"cc": ["gcc", "-m32"], "ldflags": ["-m32"]}}
HELLO = '#include <stdio.h>\nint main(void) { puts(GREETING); return 0; }\n'
MAKEFILE = ("hello: hello.c\n\t$(CC) $(CFLAGS) -DGREETING='\"$(GREETING)\"' -static -o $@ "
            "hello.c $(LDFLAGS)\ninstall: hello\n"
            "\tinstall -D -m 755 hello $(DESTDIR)/usr/bin/hello\n")
# A configure script of the autoconf kind: it records what it was given in config.mk.
CONFIGURE = """#!/bin/sh
for arg; do
    case $arg in
        --build=*|--host=*|--prefix=*|--enable-*) echo "# $arg" >> config.mk ;;
        *=*) echo "$arg" >> config.mk ;;
    esac
done
echo "WHERE = $WHERE" >> config.mk
"""


def image(root: Path, packages: list[str]) -> Path:
    config = root / "img.yaml"
    config.write_text(yaml.safe_dump({**I386, "recipe_dirs": ["recipes"], "packages": packages,
                                      "compression": "none", "output": "rootfs.cpio"}))
    return config


def build(root: Path, config: Path, *flags: object) -> subprocess.CompletedProcess[str]:
    return khib("rootfs", "-c", config, "-o", root / "out", "--cache-dir", root / "cache",
                "--dl-dir", root / "dl", *flags)


def sources(root: Path, name: str, files: dict[str, str]) -> None:
    for file, text in files.items():
        path = root / "recipes" / name / "src" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if file == "configure" else 0o644)


def test_make_and_autotools_fill_in_the_toolchain(tmp_path: Path) -> None:
    sources(tmp_path, "viamake", {"hello.c": HELLO, "Makefile": MAKEFILE})
    write_recipe(tmp_path, "viamake", version="1", license="MIT", kind="make",
                 make=["GREETING=made by make"], make_targets=["hello"])
    sources(tmp_path, "viaconf", {"hello.c": HELLO, "configure": CONFIGURE,
                                  "Makefile": "include config.mk\n" + MAKEFILE})
    write_recipe(tmp_path, "viaconf", version="1", license="MIT", kind="autotools",
                 configure=["--enable-thing", "GREETING=configured"],
                 configure_env=["WHERE=in the environment"], ldflags=["-Wl,-O1"])
    assert_ok(build(tmp_path, image(tmp_path, ["viamake", "viaconf"])))
    mk = (tmp_path / "out" / "build" / "viaconf" / "src" / "config.mk").read_text()
    triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert f"# --build={triplet}\n# --host=i686-linux-gnu\n# --prefix=/usr\n" in mk
    assert "# --enable-thing\nGREETING=configured\nCC=gcc -m32 --sysroot=" in mk
    assert "LDFLAGS=-m32 -Wl,-O1\nWHERE = in the environment\n" in mk
    for name, greeting in (("viamake", "made by make"), ("viaconf", "configured")):
        program = tmp_path / "out" / "staging" / name / "usr" / "bin" / "hello"
        assert subprocess.run([program], capture_output=True, text=True,
                              check=True).stdout == greeting + "\n"


def test_a_key_of_another_kind_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "odd", version="1", license="MIT",
                        configure=["--enable-x"])
    result = build(tmp_path, image(tmp_path, ["odd"]))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"khib-build: error: {path}:4: configure is for kind "
                                     "autotools, not commands")


def test_the_kernel_is_a_kind_not_a_package(tmp_path: Path) -> None:
    """The kernel's recipe is of kind kernel: an image cannot list it, a kernel recipe of
    another kind is refused, and a misspelt kind gets the likely one. Each before any
    build, exit 2, at the recipe's line."""
    (tmp_path / "recipes").mkdir()
    config = image(tmp_path, ["linux"])
    result = build(tmp_path, config)
    assert result.returncode == 2
    line = config.read_text().splitlines().index("packages:") + 1
    assert result.stderr.strip() == (
        f"khib-build: error: {config}:{line}: linux is a recipe of kind kernel, not a "
        "package: `khib-build kernel` builds it, from the image config's kernel_source")
    path = write_recipe(tmp_path, "linux", version="6.1", license="GPL-2.0-only")
    result = build(tmp_path, image(tmp_path, ["khib-hello"]))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"khib-build: error: {path}: linux is the kernel's "
                                     "recipe: give it kind: kernel")
    path.unlink()
    path = write_recipe(tmp_path, "odd", version="1", license="MIT", kind="mak")
    result = build(tmp_path, image(tmp_path, ["odd"]))
    assert result.returncode == 2
    expected = (f"khib-build: error: {path}:4: expected one of commands, make, autotools, "
                "python, deb, kernel, got 'mak' (did you mean 'make'?)")
    assert result.stderr.strip() == expected
    # fetch --all reads every recipe on the search path: each is held to its kind too.
    fetched = khib("fetch", "--all", "-c", image(tmp_path, ["khib-hello"]), "--offline",
                   "--dl-dir", tmp_path / "dl")
    assert fetched.returncode == 2 and fetched.stderr.strip() == expected


def make_deb(root: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A Debian binary package for i386 made with dpkg-deb, as Debian's tools make it."""
    tree = root / f"{name}-deb"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: i386\nMaintainer: T <t@t>\n"
        f"Description: a test package\n")
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
        (tree / rel).chmod(0o755 if rel.startswith("usr/bin") else 0o644)
    deb = root / f"{name}_{version}_i386.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", tree, deb],
                   check=True, capture_output=True, env={"SOURCE_DATE_EPOCH": "0",
                                                         "PATH": "/usr/bin:/bin"})
    return deb


def test_a_deb_package_goes_into_the_image_offline_with_its_license(tmp_path: Path) -> None:
    program = tmp_path / "prog"
    (tmp_path / "prog.c").write_text('#include <stdio.h>\nint main(void){puts("deb");}\n')
    subprocess.run(["gcc", "-m32", "-static", "-o", program, tmp_path / "prog.c"], check=True)
    deb = make_deb(tmp_path, "debhello", "1.0-1", {
        "usr/bin/debhello": program.read_bytes(),
        "usr/share/doc/debhello/copyright": b"Format: test\nLicense: MIT\n",
        "usr/share/man/man1/debhello.1": b".TH x\n"})
    (tmp_path / "dl").mkdir()
    shutil.copyfile(deb, tmp_path / "dl" / deb.name)
    write_recipe(tmp_path, "debhello", version="1.0-1", license="MIT", kind="deb",
                 debs={"i386": [{"name": "debhello", "version": "1.0-1",
                                 "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}]})
    config = image(tmp_path, ["debhello"])
    assert_ok(khib("lint", "-c", config, "debhello"))
    assert_ok(build(tmp_path, config, "--offline"))
    tree = tmp_path / "out" / "rootfs"
    assert (tree / "usr" / "bin" / "debhello").read_bytes()[:4] == b"\x7fELF"
    assert not any((tree / "usr" / "share").iterdir())  # docs and man pages left out
    assert_ok(khib("legal-info", "-c", config, "-o", tmp_path / "out", "--dl-dir",
                   tmp_path / "dl", "--offline"))
    legal = tmp_path / "out" / "legal-info"
    assert (legal / "licenses" / "debhello" / "debhello.copyright").read_bytes() == \
        b"Format: test\nLicense: MIT\n"
    # A package whose bytes differ from the pin is refused, offline or not.
    (tmp_path / "dl" / deb.name).write_bytes(deb.read_bytes() + b"x")
    result = khib("fetch", "-c", config, "--dl-dir", tmp_path / "dl", "--offline")
    assert result.returncode == 1
    assert f"package debhello: cannot obtain {deb.name}" in result.stderr


def test_a_gpl_deb_ships_its_debian_source_in_legal_info(tmp_path: Path) -> None:
    """The source package named in the .deb's control file, checked against its .dsc."""
    deb = make_deb(tmp_path, "gplhello", "2.0-1", {
        "usr/share/doc/gplhello/copyright": b"License: GPL-2\n"})
    (tmp_path / "dl").mkdir()
    shutil.copyfile(deb, tmp_path / "dl" / deb.name)
    source = tmp_path / "dl" / "debian-src" / "gplhello_2.0-1"
    source.mkdir(parents=True)
    (source / "gplhello_2.0.orig.tar.gz").write_bytes(b"upstream")
    digest = hashlib.sha256(b"upstream").hexdigest()
    (source / "gplhello_2.0-1.dsc").write_text(
        f"Source: gplhello\nChecksums-Sha256:\n {digest} 8 gplhello_2.0.orig.tar.gz\n")
    write_recipe(tmp_path, "gplhello", version="2.0-1", license="GPL-2.0-only", kind="deb",
                 debs={"i386": [{"name": "gplhello", "version": "2.0-1",
                                 "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}]})
    config = image(tmp_path, ["gplhello"])
    assert_ok(khib("legal-info", "-c", config, "-o", tmp_path / "out", "--dl-dir",
                   tmp_path / "dl", "--offline"))
    shipped = tmp_path / "out" / "legal-info" / "sources" / "gplhello-2.0-1"
    assert sorted(p.name for p in shipped.iterdir()) == [
        "gplhello_2.0-1.dsc", "gplhello_2.0.orig.tar.gz"]
    (source / "gplhello_2.0.orig.tar.gz").write_bytes(b"tampered")
    result = khib("legal-info", "-c", config, "-o", tmp_path / "out", "--dl-dir",
                  tmp_path / "dl", "--offline")
    assert result.returncode == 1
    assert "the Debian source gplhello 2.0-1 of gplhello_2.0-1_i386.deb is not in" \
        in result.stderr
