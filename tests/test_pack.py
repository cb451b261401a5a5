"""`khib-build pack` against real readers: GNU cpio and bsdtar extract what was packed."""

from __future__ import annotations

import importlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, assert_ok, describe, khib

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="extracting device nodes needs root")


def make_tree(root: Path) -> None:
    (root / "etc" / "deep" / "er").mkdir(parents=True)
    (root / "etc" / "deep" / "er" / "file.txt").write_text("nested\n")
    (root / "empty").write_bytes(b"")
    (root / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "tool", 0o755)
    (root / "data.bin").write_bytes(os.urandom(70_001))  # not a multiple of 4
    (root / "link").symlink_to("etc/deep/er/file.txt")
    (root / "hard-a").write_bytes(b"shared content\n")
    os.link(root / "hard-a", root / "hard-b")
    os.chmod(root / "etc", 0o750)


TABLE = """\
/dev/console c 600 0 0 5 1 - - -
/dev/tty     c 620 0 5 4 0 0 1 2
/etc/deep    d 711 0 0 - - - - -
"""


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, Path]:
    tree = tmp_path / "tree"
    tree.mkdir()
    make_tree(tree)
    table = tmp_path / "devices.txt"
    table.write_text(TABLE)
    image = tmp_path / "image.cpio"
    assert_ok(khib("pack", tree, "-o", image, "--compress", "none", "--device-table", table))
    return tree, image


def expected_tree(tree: Path) -> dict[str, tuple]:
    want = describe(tree)
    want["etc/deep"] = ("dir", 0o711)
    want["dev"] = ("dir", 0o755)
    want["dev/console"] = ("dev", stat.S_IFCHR, 0o600, 5, 1)
    want["dev/tty0"] = ("dev", stat.S_IFCHR, 0o620, 4, 0)
    want["dev/tty1"] = ("dev", stat.S_IFCHR, 0o620, 4, 1)
    return want


@as_root
def test_gnu_cpio_extracts_the_same_tree(packed: tuple[Path, Path], tmp_path: Path) -> None:
    tree, image = packed
    out = tmp_path / "gnu"
    out.mkdir()
    with image.open("rb") as stdin:
        subprocess.run(["cpio", "-idmv", "--no-absolute-filenames"], cwd=out, stdin=stdin,
                       check=True, capture_output=True)
    assert describe(out) == expected_tree(tree)
    assert (out / "hard-a").stat().st_ino == (out / "hard-b").stat().st_ino
    assert (out / "dev" / "tty1").stat().st_gid == 5


@as_root
def test_bsdtar_extracts_the_same_tree(packed: tuple[Path, Path], tmp_path: Path) -> None:
    tree, image = packed
    out = tmp_path / "bsd"
    out.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(image), "-C", str(out)], check=True)
    assert describe(out) == expected_tree(tree)
    assert (out / "hard-a").stat().st_ino == (out / "hard-b").stat().st_ino


def test_listing_shows_owners_nodes_and_links(packed: tuple[Path, Path]) -> None:
    _, image = packed
    listing = subprocess.run(["cpio", "-itv", "--numeric-uid-gid"], stdin=image.open("rb"),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    rows = {line.split()[-1] if "->" not in line else line.split()[-3]: line.split()
            for line in listing}
    assert rows["dev/console"][0] == "crw-------"
    assert rows["dev/tty1"][2:4] == ["0", "5"]
    assert rows["link"][0].startswith("l")
    assert all(row[2:4] == ["0", "0"] for name, row in rows.items()
               if not name.startswith("dev/tty"))
    # Hard links share one inode; the data travels with the last of them.
    assert (rows["hard-a"][1], rows["hard-a"][4]) == ("2", "0")
    assert (rows["hard-b"][1], rows["hard-b"][4]) == ("2", "15")
    inspect = khib("inspect", image).stdout
    assert "crw-------     0     0        5,1 dev/console" in inspect
    assert "link -> etc/deep/er/file.txt" in inspect


RUNTIME_PACKAGES = ("khib_build", "yaml", "jinja2", "markupsafe", "libarchive", "requests",
                    "urllib3", "idna", "charset_normalizer", "certifi", "zstandard", "lz4")


def readable_copy_of_khib(dest: Path) -> Path:
    """khib-build and its runtime packages where any user can read them (the checkout and
    its venv may lie below a folder only root may enter)."""
    for name in RUNTIME_PACKAGES:
        package = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(package, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_packing_needs_no_privilege(default_image: Path) -> None:
    """The image's packing step as uid 65534 still yields dev/console as c 5,1."""
    tmp_path = Path(tempfile.mkdtemp(prefix="khib-nobody-"))  # outside root's private tmp
    os.chmod(tmp_path, 0o755)
    code = readable_copy_of_khib(tmp_path / "code")
    tree = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(default_image.parent / "rootfs"), str(tree)], check=True)
    shutil.copyfile(REPO / "configs" / "device_table.txt", tmp_path / "devices")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["chown", "-R", "65534:65534", str(tree), str(out)], check=True)
    image = out / "image.gz"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         os.path.realpath(sys.executable), "-m", "khib_build", "pack", str(tree),
         "-o", str(image), "--device-table", str(tmp_path / "devices")],
        capture_output=True, text=True, cwd=out, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(out), "PYTHONPATH": str(code)})
    assert_ok(result)
    assert image.stat().st_uid == 65534
    assert "crw-------     0     0        5,1 dev/console" in khib("inspect", image).stdout
    # Packed by nobody, the bytes equal those the build itself wrote.
    assert image.read_bytes() == default_image.read_bytes()
    shutil.rmtree(tmp_path)
