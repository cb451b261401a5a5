"""Configs that include configs, and the post_build and post_image hooks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from khib_build.settings.config import load_config
from tests.helpers import REPO, X86_64_CONFIG, assert_ok, khib, write_recipe


def greet_package(root: Path) -> None:
    for name in ("greet", "wave"):
        src = root / "recipes" / name / "src"
        src.mkdir(parents=True)
        (src / f"{name}.sh").write_text(f"#!/bin/sh\necho {name}\n")
        write_recipe(root, name, version="1", license="MIT",
                     install=[f"install -D -m 755 {name}.sh {{{{ destdir }}}}/bin/{name}"])
    (root / "base" / "overlay" / "etc").mkdir(parents=True)
    (root / "base" / "overlay" / "etc" / "motd").write_text("hi\n")


def build(config: Path, out: Path, cache: Path) -> bytes:
    assert_ok(khib("rootfs", "-c", config, "-o", out, "--cache-dir", cache))
    return (out / "rootfs.cpio").read_bytes()


def test_an_including_config_builds_the_bytes_of_the_flat_one(tmp_path: Path) -> None:
    greet_package(tmp_path)
    (tmp_path / "base" / "base.yaml").write_text(
        "name: base\narch: x86_64\ntoolchain: {cc: [gcc], cflags: [-O2]}\n"
        "recipe_dirs: [../recipes]\npackages: [greet]\noverlays: [overlay]\n"
        "compression: none\noutput: rootfs.cpio\n")
    (tmp_path / "variant.yaml").write_text(
        "include: base/base.yaml\narch: i386\ntoolchain: {cc: [gcc, -m32]}\n"
        "packages+: [wave]\n")
    (tmp_path / "flat.yaml").write_text(
        "name: base\narch: i386\ntoolchain: {cc: [gcc, -m32], cflags: [-O2]}\n"
        "recipe_dirs: [recipes]\npackages: [greet, wave]\noverlays: [base/overlay]\n"
        "compression: none\noutput: rootfs.cpio\n")
    flat = build(tmp_path / "flat.yaml", tmp_path / "out-flat", tmp_path / "cache")
    included = build(tmp_path / "variant.yaml", tmp_path / "out-inc", tmp_path / "cache")
    assert flat == included
    assert b"etc/motd" in included and b"bin/wave" in included
    shown = khib("show-info", "-c", tmp_path / "variant.yaml", "--json")
    assert_ok(shown)
    where = yaml.safe_load(shown.stdout)["settings_from"]
    assert where["arch"] == f"{tmp_path / 'variant.yaml'}:2"
    assert where["overlays"] == f"{tmp_path / 'base' / 'base.yaml'}:6"
    assert where["early_segment"] == "default"


def test_include_errors_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("include: b.yaml\npackages: [x]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.returncode == 2
    assert result.stderr.startswith(f"khib-build: error: {tmp_path / 'b.yaml'}:1: include ")
    assert "is a cycle" in result.stderr
    (tmp_path / "b.yaml").write_text("packages: [x]\ncompression: zip\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.returncode == 2
    assert result.stderr.startswith(f"khib-build: error: {tmp_path / 'b.yaml'}:2: compression: "
                                    "expected one of ")
    (tmp_path / "b.yaml").write_text("packages: [busybox, nosuch]\n")
    (tmp_path / "a.yaml").write_text("include: b.yaml\npackages+: [lz4, nosuch2]\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.stderr.startswith(f"khib-build: error: {tmp_path / 'b.yaml'}:1: no recipe "
                                    "for package 'nosuch'")
    (tmp_path / "b.yaml").write_text("packages: [busybox]\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.stderr.startswith(f"khib-build: error: {tmp_path / 'a.yaml'}:2: no recipe "
                                    "for package 'nosuch2'")
    (tmp_path / "b.yaml").write_text("packages: [busybox]\ncompression: gzip\n")
    (tmp_path / "a.yaml").write_text("include: b.yaml\ncompression+: [x]\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.returncode == 2
    assert f"{tmp_path / 'a.yaml'}:2: compression+ extends a list" in result.stderr


def test_the_x86_64_config_is_the_default_one_for_x86_64(tmp_path: Path) -> None:
    """configs/khib-x86_64.yaml includes khib.yaml: the same settings as spelled out."""
    flat = yaml.safe_load((REPO / "configs" / "khib.yaml").read_text())
    flat.update(arch="x86_64", toolchain={"cc": ["gcc"], "cflags": ["-Os", "-pipe"],
                                          "ldflags": []},
                overlays=[str(REPO / "overlays" / "khib")],
                device_tables=[str(REPO / "configs" / "device_table.txt")])
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    assert load_config(tmp_path / "flat.yaml") == load_config(X86_64_CONFIG)


HOOK = """#!/bin/sh
set -e
echo "$KHIB_ARCH $SOURCE_DATE_EPOCH $(basename "$KHIB_OUTPUT_DIR") $PWD" > "$1/etc/hooked"
echo changed >> "$KHIB_TARGET_DIR/bin/greet"
test "$KHIB_CONFIG_DIR" = "$(dirname "$0")"
"""
POST_IMAGE = """#!/bin/sh
sha256sum "$1" | cut -d' ' -f1 > "$KHIB_OUTPUT_DIR/image.sha256"
test "$1" = "$KHIB_IMAGE"
"""


def test_hooks_run_with_their_environment_and_are_image_inputs(tmp_path: Path) -> None:
    greet_package(tmp_path)
    for name, text in (("post-build.sh", HOOK), ("post-image.sh", POST_IMAGE)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    config = tmp_path / "img.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [greet]\noverlays: [base/overlay]\n"
                      "compression: none\noutput: rootfs.cpio\nsource_date_epoch: 1234\n"
                      "post_build: [post-build.sh]\npost_image: [post-image.sh]\n")
    out = tmp_path / "out"
    image = build(config, out, tmp_path / "cache")
    assert (out / "rootfs" / "etc" / "hooked").read_text() == f"i386 1234 out {out}\n"
    assert b"i386 1234 out" in image and b"changed" in image
    staged = out / "staging" / "greet" / "bin" / "greet"
    assert staged.read_text() == "#!/bin/sh\necho greet\n"  # the hook changed a copy
    assert (out / "image.sha256").read_text().strip() == hashlib.sha256(image).hexdigest()
    result = khib("rootfs", "-c", config, "-o", out, "--cache-dir", tmp_path / "cache")
    assert "rootfs.cpio: up to date" in result.stderr
    (tmp_path / "post-build.sh").write_text(HOOK.replace("changed", "changed again"))
    assert b"changed again" in build(config, out, tmp_path / "cache")


def test_a_failing_hook_fails_the_build_naming_itself(tmp_path: Path) -> None:
    greet_package(tmp_path)
    (tmp_path / "broken.sh").write_text("echo 'no disk space' >&2\nexit 3\n")
    config = tmp_path / "img.yaml"
    config.write_text("recipe_dirs: [recipes]\npackages: [greet]\ncompression: none\n"
                      "output: rootfs.cpio\npost_build: [broken.sh]\n")
    result = khib("rootfs", "-c", config, "-o", tmp_path / "out", "--cache-dir",
                  tmp_path / "cache")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (f"post_build hook {tmp_path / 'broken.sh'} failed (exit status 3); log: "
            f"{tmp_path / 'out' / 'logs' / 'post_build-broken.sh.log'}\n  no disk space"
            ) in result.stderr
    assert not (tmp_path / "out" / "rootfs.cpio").exists()


@pytest.mark.parametrize(("included", "line", "message"), [
    ("just a string\n", 1, "expected a mapping of settings, got a string 'just a string'"),
    ("~\n", 1, "expected a mapping of settings, got nothing (null)"),
    ("- busybox\n", 1, "expected a mapping of settings, got a list"),
    ("name: b\npackages: 5\n", 2, "packages: expected a list"),  # overridden, checked all the same
    ("bogus+: [x]\n", 1, "unknown key 'bogus'"),
    ("toolchain: {bogus: 1}\n", 1, "toolchain: unknown key 'bogus'"),
    ("source_date_epoch: -1\n", 1,
     "source_date_epoch: expected an integer from 0 to 4294967295, got -1"),
])
def test_an_included_file_is_checked_as_strictly_as_the_config(
        tmp_path: Path, included: str, line: int, message: str) -> None:
    """Every included file: its shape and each of its keys and values, whatever the
    including file overrides; the error names the included file, its line and the key."""
    (tmp_path / "b.yaml").write_text(included)
    (tmp_path / "a.yaml").write_text("include: b.yaml\nname: a\npackages: [busybox]\n")
    result = khib("show-info", "-c", tmp_path / "a.yaml")
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.startswith(
        f"khib-build: error: {tmp_path / 'b.yaml'}:{line}: {message}"), result.stderr
    assert "Traceback" not in result.stderr
