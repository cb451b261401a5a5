"""Overlays and tables never write outside the image tree."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import khib, write_recipe


def image_with_overlays(root: Path, overlays: list[str]) -> Path:
    write_recipe(root, "base", version="1", license="MIT",
                 install=[f"mkdir -p {{{{ destdir }}}}/usr && ln -s {root / 'outside'} "
                          "{{ destdir }}/usr/lib"])
    config = root / "image.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [base]\n"
                      f"overlays: [{', '.join(overlays)}]\n")
    (root / "outside").mkdir()
    return config


def test_overlay_file_through_a_packaged_symlink_is_refused(tmp_path: Path) -> None:
    config = image_with_overlays(tmp_path, ["ov"])
    (tmp_path / "ov" / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "ov" / "usr" / "lib" / "pwned.j2").write_text("{{ image.name }}\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache")
    assert result.returncode == 1
    assert "khib-build: error: /usr/lib: overlay folder over a non-folder" in result.stderr
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (tmp_path / "out" / "rootfs.gz").exists()


def test_overlay_file_through_an_overlay_symlink_is_refused(tmp_path: Path) -> None:
    config = image_with_overlays(tmp_path, ["first", "second"])
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "evil").symlink_to(tmp_path / "outside")
    (tmp_path / "second" / "evil").mkdir(parents=True)
    (tmp_path / "second" / "evil" / "pwned").write_text("x")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache")
    # Refused before any build (exit 2), naming both overlays and the path.
    assert result.returncode == 2 and not result.stdout, result.stdout
    assert result.stderr == (
        f"khib-build: error: {tmp_path / 'second' / 'evil'}: overlay {tmp_path / 'second'} has "
        f"a folder /evil where the earlier overlay {tmp_path / 'first'} puts a symlink (to "
        f"{tmp_path / 'outside'}): an overlay folder cannot go over a non-folder\n")
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_device_table_path_that_escapes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    table = tmp_path / "table"
    table.write_text("/dev/../../etc/shadow f 600 0 0 - - - - -\n")
    result = khib("pack", tmp_path / "tree", "-o", tmp_path / "image", "--device-table", table)
    assert result.returncode == 2
    assert f"{table}:1: path '/dev/../../etc/shadow' is not inside the image" in result.stderr
    assert not (tmp_path / "image").exists()
