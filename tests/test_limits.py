"""What the kernel cannot take is refused or clamped, with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import assert_ok, khib


def test_file_of_4_gib_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with (tree / "huge").open("wb") as handle:  # sparse: costs no disk
        handle.truncate(4 << 30)
    result = khib("pack", tree, "-o", tmp_path / "image", "--compress", "none")
    assert result.returncode == 2
    assert "/huge: 4294967296 bytes; cpio newc holds files below 4 GiB" in result.stderr
    assert not (tmp_path / "image").exists()
    assert list(tmp_path.glob(".image*")) == []  # no temporary left behind


def test_name_of_4096_bytes_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tmp_path / "content").write_text("x")
    name = "/".join(["d" * 255] * 16) + "x"  # 16 * 256 = 4096 bytes (4097 with the NUL)
    (tmp_path / "list").write_text(f"file /{name} content 644 0 0\n")
    result = khib("pack", tree, "-o", tmp_path / "image", "--file-list", tmp_path / "list")
    assert result.returncode == 2
    assert f"{tmp_path / 'list'}:1: /ddd" in result.stderr
    assert "name of 4096 bytes; the kernel takes names below 4096 bytes" in result.stderr


def test_mtime_beyond_2106_is_clamped_with_a_warning(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "future").write_text("x")
    beyond = 2**32 + 1000  # 2106-02-07 and later do not fit the 32-bit field
    os.utime(tree / "future", (beyond, beyond))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(2**33)}
    result = khib("pack", tree, "-o", tmp_path / "image", "--compress", "none", env=env)
    assert_ok(result)
    assert "warning: /future: mtime 4294968296 does not fit in 32 bits; clamped" in result.stderr
    assert b"FFFFFFFF" in (tmp_path / "image").read_bytes()[:110]
