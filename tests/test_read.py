"""Reading images back: extract every segment safely, and diff two images."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import assert_ok, khib


def two_trees(root: Path) -> tuple[Path, Path]:
    a, b = root / "a", root / "b"
    for tree in (a, b):
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "same").write_text("same\n")
        (tree / "etc" / "gone").write_text("x\n")
        (tree / "tool").write_text("#!/bin/sh\n")
        (tree / "ln").symlink_to("etc/same")
    (b / "etc" / "gone").unlink()
    (b / "etc" / "new").write_text("new\n")
    (b / "etc" / "same").write_text("changed\n")
    os.chmod(b / "tool", 0o755)
    (b / "ln").unlink()
    (b / "ln").symlink_to("etc/new")
    return a, b


def test_diff_names_each_change_and_exits_1(tmp_path: Path) -> None:
    a, b = two_trees(tmp_path)
    for tree in (a, b):
        assert_ok(khib("pack", tree, "-o", tmp_path / f"{tree.name}.gz"))
    result = khib("diff", tmp_path / "a.gz", tmp_path / "b.gz")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "- etc/gone",
        "+ etc/new",
        "~ etc/same: content (5 -> 8 bytes)",
        "~ ln: target etc/same -> etc/new",
        "~ tool: mode -rw-r--r-- -> -rwxr-xr-x",
    ]
    same = khib("diff", tmp_path / "a.gz", tmp_path / "a.gz")
    assert same.returncode == 0 and same.stdout == ""


def test_extract_unpacks_every_segment(tmp_path: Path) -> None:
    a, _ = two_trees(tmp_path)
    early = tmp_path / "early" / "kernel" / "x86" / "microcode"
    early.mkdir(parents=True)
    (early / "AuthenticAMD.bin").write_bytes(b"ucode")
    image = tmp_path / "image.zst"
    assert_ok(khib("pack", a, "-o", image, "--compress", "zstd", "--early", tmp_path / "early"))
    listing = khib("inspect", image)
    assert "# segment 0: none, offset 0" in listing.stdout
    assert "# segment 1: zstd, offset " in listing.stdout
    out = tmp_path / "out"
    assert_ok(khib("extract", image, out))
    assert (out / "kernel" / "x86" / "microcode" / "AuthenticAMD.bin").read_bytes() == b"ucode"
    assert (out / "etc" / "same").read_text() == "same\n"
    assert os.readlink(out / "ln") == "etc/same"
