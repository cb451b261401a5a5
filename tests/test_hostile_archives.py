"""Hostile source archives: each refused with a message naming the entry, nothing written
outside the package's build dir."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import khib


def member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE,
           link: str = "", size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = (len(data) if data is not None else 0) if size is None else size
    if kind == tarfile.BLKTYPE:
        info.devmajor, info.devminor = 8, 0
    return info, data


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def cases(outside: Path) -> dict[str, tuple[bytes, str]]:
    """Archive bytes and the text the refusal must contain, per attack."""
    ok = member("pkg-1/ok")
    return {
        "dotdot": (tarball([ok, member("pkg-1/../../escape")]),
                   "entry 'pkg-1/../../escape': Path contains '..'"),
        "absolute": (tarball([ok, member(f"{outside}/absolute")]),
                     f"entry '{outside}/absolute': Path is absolute"),
        "symlink-then-file": (tarball([member("pkg-1/link", None, tarfile.SYMTYPE,
                                              str(outside)), member("pkg-1/link/pwned")]),
                              "entry 'pkg-1/link/pwned': Cannot extract through symlink"),
        "hardlink-outside": (tarball([ok, member("pkg-1/hl", None, tarfile.LNKTYPE,
                                                 "../../../etc/passwd")]),
                             "entry 'pkg-1/hl -> ../../../etc/passwd'"),
        "device-node": (tarball([ok, member("pkg-1/sda", None, tarfile.BLKTYPE)]),
                        "refusing device node entry 'pkg-1/sda'"),
        "bomb": (tarball([member("pkg-1/zeros", b"\0" * (40 << 20))], "w:xz"),
                 "entry 'pkg-1/zeros' takes the unpacked size past"),
    }


def recipe_for(root: Path, data: bytes, extra: str = "") -> Path:
    mirror = root / "mirror"
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / "pkg-1.tar").write_bytes(data)
    folder = root / "recipes" / "pkg"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(
        f"name: pkg\nversion: '1'\nlicense: MIT\n{extra}source:\n"
        f"  urls: [http://127.0.0.1:9/pkg-1.tar]\n"
        f"  sha256: {hashlib.sha256(data).hexdigest()}\n"
        "install:\n  - cp -r . {{ destdir }}/\n")
    config = root / "image.yaml"
    config.write_text(f"recipe_dirs: [recipes]\npackages: [pkg]\nmirrors: [{mirror.as_uri()}]\n")
    return config


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
    config = recipe_for(tmp_path, data, extra="max_expansion: 100000\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--dl-dir", tmp_path / "dl",
                  "--no-cache")
    assert result.returncode == 0, result.stderr
