"""The command line as a user meets it: suggestions, built-in configs by name, diff's exit
status, and generated files that never count as inputs."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO, assert_ok, build_greet, khib


def test_a_mistyped_verb_or_package_gets_a_suggestion() -> None:
    result = khib("rootf")
    assert result.returncode == 2
    assert "invalid choice: 'rootf'" in result.stderr
    assert "(did you mean 'rootfs'?)" in result.stderr
    for verb in ("explain", "rebuild"):
        result = khib(verb, "pyton3")
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "khib-build: error: not in the image: pyton3 (did you mean 'python3'?); its "
            "packages: busybox, kexec-tools, lz4, python3, khib-core, khib-tools")


def test_a_built_in_config_is_named_without_its_path(tmp_path: Path) -> None:
    by_name = khib("show-info", "--json", "-c", "khib-x86_64", cwd=tmp_path)
    by_path = khib("show-info", "--json", "-c", REPO / "configs" / "khib-x86_64.yaml")
    assert_ok(by_name)
    assert by_name.stdout == by_path.stdout


def test_diff_exits_like_diff(tmp_path: Path) -> None:
    """0 the same, 1 different, 2 trouble, as diff(1)."""
    build_greet(tmp_path)
    image = tmp_path / "out" / "rootfs.cpio"
    assert khib("diff", image, image).returncode == 0
    other = tmp_path / "other.cpio"
    assert_ok(khib("pack", tmp_path / "recipes", "-o", other, "--compress", "none"))
    assert khib("diff", image, other).returncode == 1
    for bad, why in ((tmp_path / "missing", f"cannot read the image {tmp_path / 'missing'}: "
                                            "No such file or directory"),
                     (REPO / "README.md", f"{REPO / 'README.md'}: offset 0: neither cpio nor "
                                          "a compressed stream the kernel knows")):
        result = khib("diff", image, bad)
        assert result.returncode == 2
        assert result.stderr.startswith(f"khib-build: error: diff: {why}")


def test_io_errors_name_the_operation_and_the_path(tmp_path: Path) -> None:
    for argv, message in (
            (["rootfs", "-o", "/proc/khib-out"],
             "cannot use /proc/khib-out as the output dir: No such file or directory"),
            (["pack", tmp_path, "-o", "/proc/khib.cpio"],
             "cannot write /proc/khib.cpio: No such file or directory"),
            (["inspect", tmp_path], f"cannot read the image {tmp_path}: Is a directory")):
        result = khib(*argv)
        assert result.returncode == 1, result.stderr
        assert result.stderr == f"khib-build: error: {message}\n"


def test_byte_code_beside_a_recipe_is_not_an_input(tmp_path: Path) -> None:
    """pip compiles recipes' src/ when it installs khib-build: that changes no key."""
    build_greet(tmp_path)
    cache = tmp_path / "recipes" / "greet" / "src" / "__pycache__"
    cache.mkdir()
    (cache / "greet.cpython-311.pyc").write_bytes(b"\x00" * 16)
    (tmp_path / "recipes" / "greet" / "src" / "stray.pyc").write_bytes(b"\x00")
    status = khib("status", "-c", tmp_path / "img.yaml", "-o", tmp_path / "out",
                  "--cache-dir", tmp_path / "cache")
    assert_ok(status)
    assert "greet" in status.stdout and "up to date" in status.stdout, status.stdout
