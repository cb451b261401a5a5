"""Python in the image: CPython built for the target runs a packaged tool, with only the
standard library modules the image's code imports, byte-compiled reproducibly."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_CONFIG, REPO, X86_64_CONFIG, assert_ok, khib

pytestmark = pytest.mark.slow
sys.path.insert(0, str(REPO / "recipes" / "khib-hello" / "src"))
from khib_hello.cli import digest  # noqa: E402


def hello_config(base: Path, root: Path) -> Path:
    """The default config for ``base``'s arch with khib-hello added."""
    config = root / "hello.yaml"
    config.write_text(f"include: {base}\npackages+: [khib-hello]\n")
    return config


@pytest.fixture(scope="session")
def hello_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    images = {}
    for arch, base in (("i386", DEFAULT_CONFIG), ("x86_64", X86_64_CONFIG)):
        root = tmp_path_factory.mktemp(f"hello-{arch}")
        config = hello_config(base, root)
        assert_ok(khib("rootfs", "-c", config, "-o", root / "out"))
        images[arch] = root / "out" / "rootfs.gz"
    return images


def run_hello(config: Path, image: Path, kernel: Path) -> str:
    result = khib("boot", "-c", config, "--kernel", kernel, "--image", image,
                  "--run", "khib-hello --count 12", "--expect", "khib: run exited",
                  "--timeout", 180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


@pytest.mark.parametrize("arch", ["i386", "x86_64"])
def test_the_tool_runs_on_the_image_python(arch: str, hello_images: dict[str, Path],
                                           debian_kernel: Path) -> None:
    console = run_hello(DEFAULT_CONFIG if arch == "i386" else X86_64_CONFIG,
                        hello_images[arch], debian_kernel)
    assert "KHIB-HELLO-MARKER" in console
    assert "version=3.11.2" in console
    assert f"pointer-size={4 if arch == 'i386' else 8}" in console
    assert f"digest={digest(12)}" in console  # json, struct, hashlib, argparse all worked
    assert "khib: run exited 0" in console
    modules = (hello_images[arch].parent / "python-modules.txt").read_text().split()
    assert {"argparse", "json", "hashlib", "struct", "encodings.utf_8"} <= set(modules)
    assert not {"doctest", "unittest", "tkinter", "pydoc"} & set(modules)
    # Megabytes, not tens of megabytes: the pruned library, byte-compiled, no sources.
    lib = hello_images[arch].parent / "rootfs" / "usr" / "lib" / "python3.11"
    sizes = [p.stat().st_size for p in lib.rglob("*") if p.is_file()]
    assert sum(sizes) < 8 << 20 and not list(lib.rglob("*.py"))


def test_a_module_the_closure_missed_fails_in_the_guest(hello_images: dict[str, Path],
                                                       debian_kernel: Path,
                                                       tmp_path: Path) -> None:
    """Take argparse out of the pruned library: the tool's import fails in the guest, so
    the closure is what provides it (the full library is nowhere else in the image)."""
    rootfs = hello_images["i386"].parent / "rootfs"
    assert (rootfs / "usr" / "lib" / "python3.11" / "argparse.pyc").is_file()
    copy = tmp_path / "rootfs"
    assert_ok(khib("extract", hello_images["i386"], copy))
    (copy / "usr" / "lib" / "python3.11" / "argparse.pyc").unlink()
    image = tmp_path / "missing.gz"
    assert_ok(khib("pack", copy, "-o", image,
                   "--device-table", REPO / "configs" / "device_table.txt"))
    console = run_hello(DEFAULT_CONFIG, image, debian_kernel)
    assert "ModuleNotFoundError: No module named 'argparse'" in console
    assert re.search(r"khib: run exited [1-9]", console)


def test_two_builds_give_the_same_image(hello_images: dict[str, Path], tmp_path: Path) -> None:
    """The packages come from the cache, the library is pruned and compiled anew: the
    .pyc files (unchecked-hash, no timestamps) and so the image are the same bytes."""
    config = hello_config(DEFAULT_CONFIG, tmp_path)
    assert_ok(khib("rootfs", "-c", config, "-o", tmp_path / "again"))
    assert (tmp_path / "again" / "rootfs.gz").read_bytes() == hello_images["i386"].read_bytes()
