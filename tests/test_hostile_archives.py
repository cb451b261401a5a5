"""Hostile source archives: each refused with a message naming the entry, nothing written
outside the package's build dir."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from khib_build.sources.extract import extract
from tests.helpers import cases, khib, member, recipe_for, tarball


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "symlink-then-file",
                                    "hardlink-outside", "device-node", "bomb"])
def test_hostile_archive_is_refused(attack: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data, expected = cases(outside)[attack]
    config = recipe_for(tmp_path, data)
    out = tmp_path / "out"
    result = khib("rootfs", "-c", config, "-o", out, "--dl-dir", tmp_path / "dl", "--no-cache")
    assert result.returncode == 1, result.stderr
    assert "package pkg: pkg-1.tar: " in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert list(outside.iterdir()) == []
    # Outside the package's build dir, only what khib-build owns was written.
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                     if not any(p.is_relative_to(tmp_path / d)
                                for d in ("out/build", "out/sysroot", "mirror", "recipes",
                                          "outside")))
    assert written == ["dl", "dl/.partial", "dl/pkg-1.tar", "image.yaml", "out", "out/.khib",
                       "out/.khib/lock", "out/logs", "out/logs/pkg.log", "out/staging",
                       "out/staging/pkg"]
    assert not (out / "rootfs.gz").exists()


def test_recipe_may_raise_the_expansion_limit(tmp_path: Path) -> None:
    data = tarball([member("pkg-1/zeros", b"\0" * (40 << 20))], "w:xz")
    config = recipe_for(tmp_path, data, max_expansion=100000)
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--dl-dir", tmp_path / "dl",
                  "--no-cache")
    assert result.returncode == 0, result.stderr


def test_a_hard_link_to_itself_is_skipped_without_noise(tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]
                                                        ) -> None:
    """kexec-tools' tarball links some files to themselves: nothing to make, nothing said
    (libarchive would print a line per entry on the terminal)."""
    data = tarball([member("pkg-1/a.c", b"int a;\n"),
                    member("pkg-1/a.c", None, tarfile.LNKTYPE, "pkg-1/a.c")], mode="w")
    archive = tmp_path / "pkg-1.tar"
    archive.write_bytes(data)
    top = extract(archive, tmp_path / "out", 20)
    assert (top / "a.c").read_bytes() == b"int a;\n"
    assert capfd.readouterr() == ("", "")
